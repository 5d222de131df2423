package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/drover-dev/drover/internal/client"
	"github.com/drover-dev/drover/internal/pki"
)

// defaultAddr is where operator verbs look for the server when neither
// --addr nor DROVER_ADDR says.
const defaultAddr = "https://127.0.0.1:8443"

// connFlags are the flags of every verb that talks to the server, with the
// DROVER_* environment variables as fallback (Nomad's convention).
type connFlags struct {
	addr, caCert, clientCert, clientKey string
}

func (f *connFlags) register(c *cobra.Command) {
	fl := c.PersistentFlags()
	fl.StringVar(&f.addr, "addr", "", "server URL (env DROVER_ADDR, default "+defaultAddr+")")
	fl.StringVar(&f.caCert, "ca-cert", "", "CA certificate file (env DROVER_CACERT)")
	fl.StringVar(&f.clientCert, "client-cert", "", "client certificate file (env DROVER_CLIENT_CERT)")
	fl.StringVar(&f.clientKey, "client-key", "", "client key file (env DROVER_CLIENT_KEY)")
}

func orEnv(v, name, def string) string {
	if v != "" {
		return v
	}
	if e := os.Getenv(name); e != "" {
		return e
	}
	return def
}

// client builds an API client from the flags and environment.
func (f *connFlags) client() (*client.Client, error) {
	addr := orEnv(f.addr, "DROVER_ADDR", defaultAddr)
	ca := orEnv(f.caCert, "DROVER_CACERT", "")
	cert := orEnv(f.clientCert, "DROVER_CLIENT_CERT", "")
	key := orEnv(f.clientKey, "DROVER_CLIENT_KEY", "")
	if ca == "" || cert == "" || key == "" {
		return nil, usagef("the server needs mTLS: give --ca-cert, --client-cert and --client-key (or DROVER_CACERT, DROVER_CLIENT_CERT, DROVER_CLIENT_KEY)")
	}
	tlsCfg, err := pki.ClientTLSConfig(cert, key, ca)
	if err != nil {
		return nil, err
	}
	return client.New(client.Config{Addr: addr, TLS: tlsCfg})
}

// operatorCmd is a noun whose verbs talk to the server.
func operatorCmd(use, short string, f *connFlags) *cobra.Command {
	c := groupCmd(use, short)
	f.register(c)
	return c
}

// output formats for -o.
const (
	outText = "text"
	outYAML = "yaml"
	outJSON = "json"
)

func addOutputFlag(c *cobra.Command, p *string, def string) {
	formats := "text, yaml or json"
	if def != outText {
		formats = "yaml or json"
	}
	c.Flags().StringVarP(p, "output", "o", def, "output format: "+formats)
}

// printAs writes v as YAML or JSON.
func printAs(w io.Writer, format string, v any) error {
	switch format {
	case outJSON:
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	case outYAML:
		enc := yaml.NewEncoder(w)
		enc.SetIndent(2)
		if err := enc.Encode(v); err != nil {
			return err
		}
		return enc.Close()
	}
	return usagef("output format %q: want yaml or json", format)
}

// checkOutput refuses an unknown -o before anything is done.
func checkOutput(format string, allowed ...string) error {
	for _, a := range allowed {
		if format == a {
			return nil
		}
	}
	return usagef("output format %q: want one of %v", format, allowed)
}

var _ = fmt.Sprint
