package derive

import (
	"github.com/felis-dev/felis/model/store"
	"github.com/felis-dev/felis/snapshot"
)

// Routing returns node's desired routes (by Dst, then Type), the remote VTEPs (by Node)
// and every IP pool (by CIDR).
func Routing(v *store.View, node string, cfg snapshot.Config) (routes []snapshot.Route, vteps []snapshot.VTEP, pools []snapshot.Pool) {
	return nil, nil, nil
}
