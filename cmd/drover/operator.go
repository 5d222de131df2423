package main

import (
	"context"
	"errors"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/drover-dev/drover/internal/client"
	"github.com/drover-dev/drover/internal/output"
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

// output formats for -o (internal/output holds the rules).
const (
	outText = output.Text
	outYAML = output.YAML
	outJSON = output.JSON
)

// addOutputFlag gives a verb -o; def is text for verbs with a text form.
func addOutputFlag(c *cobra.Command, p *string, def string) {
	formats, values := "text, yaml or json", []string{outText, outYAML, outJSON}
	if def != outText {
		formats, values = "yaml or json", []string{outYAML, outJSON}
	}
	c.Flags().StringVarP(p, "output", "o", def, "output format: "+formats)
	_ = c.RegisterFlagCompletionFunc("output", cobra.FixedCompletions(values, cobra.ShellCompDirectiveNoFileComp))
}

// printAs writes v, one object or one list, as one YAML or JSON document.
func printAs(w io.Writer, format string, v any) error {
	if err := output.Print(w, format, v); err != nil {
		var ue *output.UnknownFormatError
		if errors.As(err, &ue) {
			return usageError{err}
		}
		return err
	}
	return nil
}

// checkOutput refuses an unknown -o before anything is done.
func checkOutput(format string, allowed ...string) error {
	if err := output.Check(format, allowed...); err != nil {
		return usageError{err}
	}
	return nil
}

// query is the shape of a verb that asks the server for one value and
// prints it: -o is checked before anything is sent, one client makes the
// call, and the value is printed as data (-o yaml|json) or by text.
func query[T any](cmd *cobra.Command, e *env, conn *connFlags, format string,
	ask func(ctx context.Context, cl *client.Client) (T, error), text func(T) error) error {
	if err := checkOutput(format, outText, outYAML, outJSON); err != nil {
		return err
	}
	cl, err := conn.client()
	if err != nil {
		return err
	}
	defer cl.Close()
	v, err := ask(cmd.Context(), cl)
	if err != nil {
		return err
	}
	if format != outText {
		return printAs(e.stdout, format, v)
	}
	return text(v)
}
