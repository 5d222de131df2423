package facts

import (
	"runtime/debug"
	"strings"
)

// archName is the arch fact: GOARCH, the architecture the agent and so the
// packages it installs are built for, with 32-bit arm refined by GOARM to
// the names uname uses (armv7l), as builds are tagged by those.
func archName(goarch, goarm, machine string) string {
	if goarch != "arm" {
		return goarch
	}
	// Since Go 1.22 GOARM may carry ",softfloat" or ",hardfloat".
	level, _, _ := strings.Cut(goarm, ",")
	switch level {
	case "5", "6", "7":
		return "armv" + level + "l"
	}
	// Unknown level: uname says what the CPU is, if it is 32-bit arm.
	if strings.HasPrefix(machine, "armv") {
		return machine
	}
	return "arm"
}

// goarm returns the GOARM the running binary was built with, from its
// build information; "" if it is not recorded.
func goarm() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	for _, s := range info.Settings {
		if s.Key == "GOARM" {
			return s.Value
		}
	}
	return ""
}
