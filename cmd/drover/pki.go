package main

import (
	"fmt"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/pki"
)

// pkiCmd is `drover pki`: the fleet's CA and its certificates (DESIGN §4).
func pkiCmd(e *env) *cobra.Command {
	c := groupCmd("pki", "Make the fleet's CA and its server, device and admin certificates")
	c.AddCommand(pkiInitCmd(e), pkiIssueCmd(e), pkiRevokeCmd(e))
	return c
}

// pkiInitCmd is `drover pki init --dir D`.
func pkiInitCmd(e *env) *cobra.Command {
	var dir string
	c := &cobra.Command{
		Use:   "init --dir D",
		Short: "Create a CA: D/ca.crt and D/ca.key (never overwritten)",
		Args:  cobra.NoArgs,
		// Use already shows the flags that matter.
		DisableFlagsInUseLine: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" {
				return usagef("pki init: --dir is required")
			}
			if err := pki.Init(dir, time.Now()); err != nil {
				return err
			}
			printWritten(e, filepath.Join(dir, pki.CACertFile), filepath.Join(dir, pki.CAKeyFile))
			return nil
		},
	}
	c.Flags().StringVar(&dir, "dir", "", "directory of the CA (created with mode 0700)")
	return c
}

// pkiIssueCmd is `drover pki issue --dir D (--server NAME [--host H,...] | --device ID | --admin NAME)`.
func pkiIssueCmd(e *env) *cobra.Command {
	var (
		dir                           string
		server, device, admin, issuer string
		hosts                         []string
		validity                      time.Duration
	)
	c := &cobra.Command{
		Use:   "issue --dir D (--server NAME [--host H,...] | --device ID | --admin NAME | --issuer NAME) [--validity DURATION]",
		Short: "Issue a certificate signed by the CA in D: D/NAME.crt and D/NAME.key",
		Args:  cobra.NoArgs,
		// Use already shows the flags that matter.
		DisableFlagsInUseLine: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" {
				return usagef("pki issue: --dir is required")
			}
			var opt pki.IssueOptions
			n := 0
			for _, r := range []struct {
				role pki.Role
				name *string
			}{{pki.RoleServer, &server}, {pki.RoleDevice, &device}, {pki.RoleAdmin, &admin}, {pki.RoleIssuer, &issuer}} {
				if cmd.Flags().Changed(string(r.role)) {
					n++
					opt.Role, opt.Name = r.role, *r.name
				}
			}
			if n != 1 {
				return usagef("pki issue: give exactly one of --server, --device, --admin, --issuer")
			}
			if len(hosts) > 0 && opt.Role != pki.RoleServer {
				return usagef("pki issue: --host is only for --server")
			}
			if !api.ValidDeviceID(opt.Name) {
				return usagef("pki issue: --%s %q: want 1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit", opt.Role, opt.Name)
			}
			opt.Hosts = hosts
			if validity < 0 {
				return usagef("pki issue: --validity must not be negative")
			}
			opt.Validity = validity
			certPath, keyPath, err := pki.Issue(dir, opt, time.Now())
			if err != nil {
				return err
			}
			printWritten(e, certPath, keyPath)
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&dir, "dir", "", "directory of the CA")
	f.StringVar(&server, "server", "", "issue a server certificate for NAME")
	f.StringVar(&device, "device", "", "issue a device certificate whose CN is the device id ID")
	f.StringVar(&admin, "admin", "", "issue an admin certificate for NAME, allowed to use operator verbs")
	f.StringVar(&issuer, "issuer", "", "issue an issuing certificate NAME for the server (--issuer-cert/--issuer-key) to renew device certificates with")
	f.StringSliceVar(&hosts, "host", nil, "more DNS names or IP addresses of the server (comma separated or repeated)")
	f.DurationVar(&validity, "validity", 0, "lifetime, e.g. 720h (default 1 year for server and admin, 5 years for device and issuer)")
	return c
}

// pkiRevokeCmd is `drover pki revoke --dir D (--device ID | --admin NAME)`.
func pkiRevokeCmd(e *env) *cobra.Command {
	var dir, device, admin string
	c := &cobra.Command{
		Use:                   "revoke --dir D (--device ID | --admin NAME)",
		Short:                 "Add every certificate issued to a device or admin to D/crl.pem (server --crl refuses them)",
		Args:                  cobra.NoArgs,
		DisableFlagsInUseLine: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" {
				return usagef("pki revoke: --dir is required")
			}
			role, name := pki.RoleDevice, device
			switch {
			case device != "" && admin != "", device == "" && admin == "":
				return usagef("pki revoke: give exactly one of --device, --admin")
			case admin != "":
				role, name = pki.RoleAdmin, admin
			}
			n, err := pki.Revoke(dir, role, name, time.Now())
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "revoked %d certificates of %s %s\n", n, role, name)
			printWritten(e, filepath.Join(dir, pki.CRLFile))
			return nil
		},
	}
	c.Flags().StringVar(&dir, "dir", "", "directory of the CA")
	c.Flags().StringVar(&device, "device", "", "revoke the certificates of device ID")
	c.Flags().StringVar(&admin, "admin", "", "revoke the certificates of admin NAME")
	return c
}

// printWritten tells the user which files were written, one path a line.
func printWritten(e *env, paths ...string) {
	for _, p := range paths {
		fmt.Fprintf(e.stdout, "wrote %s\n", p)
	}
}
