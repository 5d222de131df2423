package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/client"
)

// TestBackoffSaysWhatIsWrong: a TLS failure or a refusal is logged as
// what it is, an error, never as "server unreachable".
func TestBackoffSaysWhatIsWrong(t *testing.T) {
	for _, tt := range []struct {
		err       error
		want, not string
		wantLevel string
	}{
		{fmt.Errorf("%w with h:1: the server's certificate is signed by an unknown authority", client.ErrTLS), "TLS failure", "unreachable", "ERROR"},
		{api.Errorf(api.EFORBIDDEN, `device "x" may not act for device "y"`), "refused this agent", "unreachable", "ERROR"},
		{fmt.Errorf("%w: h:1: connection refused", client.ErrUnreachable), "server unreachable", "TLS", "WARN"},
		{errors.New("eof"), "server unreachable", "TLS", "WARN"},
	} {
		var buf bytes.Buffer
		a := &Agent{log: slog.New(slog.NewTextHandler(&buf, nil))}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		a.backoff(ctx, 0, tt.err)
		got := buf.String()
		if !strings.Contains(got, tt.want) || strings.Contains(got, "msg=\""+tt.not) || !strings.Contains(got, "level="+tt.wantLevel) {
			t.Errorf("backoff(%v) logged %q, want %q at %s", tt.err, got, tt.want, tt.wantLevel)
		}
	}
}
