//go:build !(linux || darwin || freebsd || netbsd || openbsd)

package facts

// uname has no portable source here; machine and kernel stay unknown.
func uname() (machine, release string, err error) { return "", "", nil }
