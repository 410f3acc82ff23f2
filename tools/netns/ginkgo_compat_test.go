//go:build linux

package netns

import (
	"github.com/onsi/ginkgo/v2"
)

// Ginkgo specs pass GinkgoT() wherever the harness takes a TB (a compile-time check).
var _ TB = ginkgo.GinkgoTInterface(nil)
