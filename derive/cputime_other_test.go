//go:build !unix

package derive

import "time"

// cpuTime is not measured where getrusage does not exist; benchmarks then report 0 CPU.
func cpuTime() time.Duration { return 0 }
