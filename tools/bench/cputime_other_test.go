//go:build !unix

package bench

import "time"

// cpuTime is not measured where getrusage does not exist; benchmarks then report 0 CPU.
func cpuTime() time.Duration { return 0 }
