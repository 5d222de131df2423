package api

// Deb is one Debian package a root-mode build carries in its debs/
// folder. The agent installs it with dpkg after preinst and before
// postinst, and removes it with the build unless another installed build
// carries a package of the same name. Name, Version and Arch are the
// .deb's own control fields (Package, Version, Architecture), read when
// the build is made.
type Deb struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	Arch    string `json:"arch"`
	// Digest is the SHA-256 of the .deb file, a blob of the build.
	Digest string `json:"digest"`
	Size   int64  `json:"size"`
}
