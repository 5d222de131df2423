package main

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/drover-dev/drover/internal/agent"
	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/health"
	"github.com/drover-dev/drover/internal/local"
	"github.com/drover-dev/drover/internal/output"
)

// nodeCmds are the node-local verbs answered by the agent on this machine
// through its socket (DESIGN §4, Jetpack): config, converge, keepalive,
// log, send.
func nodeCmds(e *env) []*cobra.Command {
	return []*cobra.Command{configCmd(e), convergeCmd(e), keepaliveCmd(e), logCmd(e), sendCmd(e)}
}

// homeFlag registers --home; home returns it, else DROVER_HOME, else
// /opt/drover.
type homeFlag struct{ v string }

func (h *homeFlag) register(c *cobra.Command) {
	c.Flags().StringVar(&h.v, "home", "", "agent home (env DROVER_HOME, default /opt/drover)")
}

func (h *homeFlag) client() *local.Client {
	return local.NewClient(orEnv(h.v, "DROVER_HOME", "/opt/drover"))
}

func configCmd(e *env) *cobra.Command {
	var (
		home   homeFlag
		format string
	)
	c := &cobra.Command{
		Use:   "config [KEY]",
		Short: "Print this machine's facts, device, server and parameters: all, or one dotted key (facts.arch)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(format, outYAML, outJSON); err != nil {
				return err
			}
			var all map[string]any
			if err := home.client().Do(cmd.Context(), http.MethodGet, "/v1/config", nil, &all); err != nil {
				return err
			}
			if len(args) == 0 {
				return printAs(e.stdout, format, all)
			}
			v, ok := lookupKey(all, args[0])
			if !ok {
				return fmt.Errorf("config: no key %q; 'drover config' prints every key", args[0])
			}
			switch v.(type) {
			case map[string]any, []any:
				return printAs(e.stdout, format, v)
			}
			if format == outJSON {
				return printAs(e.stdout, format, v)
			}
			if v == nil {
				v = ""
			}
			fmt.Fprintln(e.stdout, v)
			return nil
		},
	}
	home.register(c)
	addOutputFlag(c, &format, outYAML)
	return c
}

// lookupKey finds a dotted key. A map key may itself hold dots (a package
// name like com.example:tool), so the longest key that matches wins.
func lookupKey(v any, key string) (any, bool) {
	if key == "" {
		return v, true
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, false
	}
	if x, ok := m[key]; ok {
		return x, true
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return len(keys[i]) > len(keys[j]) })
	for _, k := range keys {
		if rest, ok := strings.CutPrefix(key, k+"."); ok {
			if x, ok := lookupKey(m[k], rest); ok {
				return x, true
			}
		}
	}
	return nil, false
}

func convergeCmd(e *env) *cobra.Command {
	var home homeFlag
	var format string
	c := &cobra.Command{
		Use:   "converge",
		Short: "Converge now instead of at the next tick; prints the steps, exit 1 if one failed",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(format, outText, outYAML, outJSON); err != nil {
				return err
			}
			var last agent.ConvergeLine
			var bars *output.Bars
			var stream *output.Stream
			if format != outText {
				stream, _ = output.NewStream(e.stdout, format)
			} else if output.IsTerminal(e.stdout) {
				bars = output.NewBars(e.stdout)
			}
			err := home.client().Stream(cmd.Context(), http.MethodPost, "/v1/converge", nil, func(raw json.RawMessage) error {
				var l agent.ConvergeLine
				if err := json.Unmarshal(raw, &l); err != nil {
					return fmt.Errorf("converge: the agent answered %q: %w", raw, err)
				}
				if stream != nil {
					// Every line, the last (done) one included.
					if l.Done {
						last = l
					}
					return stream.Write(l)
				}
				if l.Done {
					last = l
					return nil
				}
				if l.Progress != nil {
					// Progress is for a terminal only: bars, else nothing.
					if bars != nil && l.Progress.BytesTotal > 0 {
						bars.Update(l.Package, l.Progress.Phase, l.Progress.BytesDone, l.Progress.BytesTotal)
					}
					return nil
				}
				line := fmt.Sprintf("%-11s %s", l.Kind, l.Message)
				if bars == nil {
					fmt.Fprintln(e.stdout, line)
					return nil
				}
				if l.Kind == api.KindStepDone || l.Kind == api.KindStepFailed {
					bars.Finish(l.Package, l.Kind == api.KindStepDone)
				}
				return bars.Println(line)
			})
			if bars != nil {
				bars.Close()
			}
			if err != nil {
				return err
			}
			if !last.Done {
				return errors.New("converge: the agent stopped answering before the end")
			}
			if !last.Converged {
				return fmt.Errorf("converge: %s", last.Error)
			}
			if stream == nil {
				fmt.Fprintln(e.stdout, "converged")
			}
			return nil
		},
	}
	home.register(c)
	addOutputFlag(c, &format, outText)
	return c
}

func keepaliveCmd(e *env) *cobra.Command {
	var (
		home   homeFlag
		cancel bool
		format string
	)
	c := &cobra.Command{
		Use:   "keepalive [DURATION|forever]",
		Short: "Delay a health-check termination of this machine: 1h by default, 30m, 2d, or forever; --cancel ends it",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(format, outText, outYAML, outJSON); err != nil {
				return err
			}
			var req api.KeepaliveRequest
			switch {
			case cancel && len(args) > 0:
				return usagef("keepalive: give a duration or --cancel, not both")
			case cancel:
				req.Cancel = true
			default:
				arg := "1h"
				if len(args) == 1 {
					arg = args[0]
				}
				d, forever, err := health.ParseDuration(arg)
				if err != nil {
					return usagef("keepalive: %v", err)
				}
				if !forever && d < time.Second {
					return usagef("keepalive: %s is shorter than a second", arg)
				}
				req.Forever = forever
				req.Seconds = int64((d + time.Second - 1) / time.Second)
			}
			var ans agent.KeepaliveAnswer
			if err := home.client().Do(cmd.Context(), http.MethodPut, "/v1/keepalive", req, &ans); err != nil {
				return err
			}
			if format != outText {
				return printAs(e.stdout, format, ans)
			}
			if !ans.Sent {
				fmt.Fprintf(e.stderr, "drover: keepalive queued: %s\n", ans.Error)
				return nil
			}
			switch k := ans.Keepalive; {
			case k == nil:
				fmt.Fprintln(e.stdout, "keepalive cancelled: a termination request now goes ahead")
			case k.Forever:
				fmt.Fprintln(e.stdout, "keepalive forever: no termination until 'drover keepalive --cancel'")
			default:
				fmt.Fprintf(e.stdout, "keepalive until %s\n", k.Until.Local().Format(time.RFC3339))
			}
			if t := ans.Termination; t != nil {
				fmt.Fprintf(e.stdout, "termination: %s (requested %s)\n", t.State, t.Requested.Local().Format(time.RFC3339))
			}
			return nil
		},
	}
	home.register(c)
	c.Flags().BoolVar(&cancel, "cancel", false, "cancel the keepalive: a pending termination goes ahead")
	addOutputFlag(c, &format, outText)
	return c
}

func logCmd(e *env) *cobra.Command {
	var (
		home            homeFlag
		level, priority string
	)
	c := &cobra.Command{
		Use:   "log MESSAGE [--level info|warn|error] [--priority low|medium|high]",
		Short: "Record an event from this machine (priority: high for error, medium otherwise)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !api.ValidLevel(level) {
				return usagef("log: --level %q: want info, warn or error", level)
			}
			if priority != "" && api.PriorityRank(priority) == 0 {
				return usagef("log: --priority %q: want low, medium or high", priority)
			}
			req := agent.LogRequest{Message: strings.Join(args, " "), Level: level, Priority: priority}
			var d agent.Delivery
			if err := home.client().Do(cmd.Context(), http.MethodPost, "/v1/log", req, &d); err != nil {
				return err
			}
			if !d.Sent {
				fmt.Fprintf(e.stderr, "drover: log queued: %s\n", d.Error)
			}
			return nil
		},
	}
	home.register(c)
	c.Flags().StringVar(&level, "level", api.LevelInfo, "info, warn or error")
	c.Flags().StringVar(&priority, "priority", "", "low, medium or high (default: high for error, medium otherwise)")
	return c
}

func sendCmd(e *env) *cobra.Command {
	var (
		home      homeFlag
		key, file string
	)
	c := &cobra.Command{
		Use:   "send [--routing-key KEY] (MESSAGE | --file F)",
		Short: "Send a message (at most 1 MiB) to the server's event stream with a routing key",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if (file == "") == (len(args) == 0) {
				return usagef("send: give a MESSAGE or --file F, one of them")
			}
			if err := agent.ValidRoutingKey(key); err != nil {
				return usagef("send: --routing-key: %v", err)
			}
			var body []byte
			if file != "" {
				var r io.Reader = e.stdin
				if file != "-" {
					f, err := os.Open(file)
					if err != nil {
						return fmt.Errorf("send: %w", err)
					}
					defer f.Close()
					r = f
				}
				var err error
				if body, err = io.ReadAll(io.LimitReader(r, agent.MaxSend+1)); err != nil {
					return fmt.Errorf("send: read %s: %w", file, err)
				}
			} else {
				body = []byte(args[0])
			}
			if len(body) > agent.MaxSend {
				return fmt.Errorf("send: the message is over the limit of %d bytes (1 MiB)", agent.MaxSend)
			}
			req := agent.SendRequest{RoutingKey: key, Body: string(body)}
			if !utf8.Valid(body) {
				req.Body, req.Encoding = base64.StdEncoding.EncodeToString(body), "base64"
			}
			var d agent.Delivery
			if err := home.client().Do(cmd.Context(), http.MethodPost, "/v1/send", req, &d); err != nil {
				return err
			}
			if !d.Sent {
				fmt.Fprintf(e.stderr, "drover: send queued: %s\n", d.Error)
			}
			return nil
		},
	}
	home.register(c)
	c.Flags().StringVar(&key, "routing-key", "", "routing key of the message (AMQP), up to 255 bytes")
	c.Flags().StringVarP(&file, "file", "f", "", "send this file's content ('-' for stdin)")
	return c
}

// nodeServerFlags are the server's flags for termination (`drover server`).
type nodeServerFlags struct {
	hook        string
	hookTimeout time.Duration
}

func (f *nodeServerFlags) register(c *cobra.Command) {
	c.Flags().StringVar(&f.hook, "termination-hook", "", "executable run with a device's id, facts and labels as JSON on stdin when its health checks ask for termination")
	c.Flags().DurationVar(&f.hookTimeout, "termination-hook-timeout", 5*time.Minute, "how long the termination hook may run")
}

// nodeAgentFlags are the agent's health-check flags beside --health-interval.
type nodeAgentFlags struct {
	timeout, startDelay time.Duration
	consecutive         int
}

func (f *nodeAgentFlags) register(c *cobra.Command) {
	fl := c.Flags()
	fl.DurationVar(&f.timeout, "health-timeout", 30*time.Second, "how long one health check may run before it is killed")
	fl.DurationVar(&f.startDelay, "health-start-delay", 0, "ignore health results this long after start and after each install")
	fl.IntVar(&f.consecutive, "health-consecutive", 1, "equal health results in a row needed to change the health state (anti-flapping)")
}

func (f *nodeAgentFlags) config(interval time.Duration, serverAddr string) (agent.NodeConfig, error) {
	switch {
	case interval <= 0:
		return agent.NodeConfig{}, usagef("--health-interval must be positive")
	case f.timeout <= 0:
		return agent.NodeConfig{}, usagef("--health-timeout must be positive")
	case f.startDelay < 0:
		return agent.NodeConfig{}, usagef("--health-start-delay must not be negative")
	case f.consecutive < 1 || f.consecutive > 100:
		return agent.NodeConfig{}, usagef("--health-consecutive must be 1 to 100")
	}
	return agent.NodeConfig{ServerAddr: serverAddr, HealthInterval: interval, HealthTimeout: f.timeout,
		HealthStartDelay: f.startDelay, HealthConsecutive: f.consecutive}, nil
}
