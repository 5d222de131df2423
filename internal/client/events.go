package client

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/drover-dev/drover/internal/api"
)

func (q EventQuery) values() url.Values {
	v := url.Values{}
	if q.After > 0 {
		v.Set("after", strconv.FormatInt(q.After, 10))
	}
	if !q.Since.IsZero() {
		v.Set("since", q.Since.UTC().Format(time.RFC3339Nano))
	}
	for k, x := range map[string]string{"device": q.Device, "kind": q.Kind, "min_priority": q.MinPriority} {
		if x != "" {
			v.Set(k, x)
		}
	}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	return v
}

// eventPage is how many events one request of EachEvent asks for.
const eventPage = 1000

// EachEvent calls fn with every stored event matching q, oldest first,
// reading them page by page (q.Limit and q.Wait are ignored). An error of
// fn ends it and is returned.
func (c *Client) EachEvent(ctx context.Context, q EventQuery, fn func(api.Event) error) error {
	q.Limit, q.Wait = eventPage, false
	for {
		evs, err := c.Events(ctx, q)
		if err != nil {
			return err
		}
		for _, ev := range evs {
			if err := fn(ev); err != nil {
				return err
			}
			q.After = ev.ID
		}
		if len(evs) < eventPage {
			return nil
		}
	}
}

// FollowEvents streams the events matching q (the stored ones after
// q.After, then live ones) to fn, as Server-Sent Events. After a dropped
// connection it resumes from the last id it gave fn (sent as
// Last-Event-ID), so nothing is missed or given twice, and tells note why.
// It returns nil when ctx is done, the server's refusal (an *api.Error,
// or a TLS or certificate failure) at once, and an error of fn.
func (c *Client) FollowEvents(ctx context.Context, q EventQuery, fn func(api.Event) error, note func(string)) error {
	q.Limit, q.Wait = 0, false
	delay := 250 * time.Millisecond
	for {
		resp, err := c.openFollow(ctx, q)
		if err != nil {
			var ae *api.Error
			if errors.As(err, &ae) || IsTLSError(err) || ctx.Err() != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
			note(fmt.Sprintf("events: %v; retrying from id %d in %v", err, q.After, delay))
		} else {
			got, err := readSSE(resp.Body, func(ev api.Event) error {
				if ev.ID <= q.After {
					return nil // never give an event twice
				}
				if err := fn(ev); err != nil {
					return err
				}
				q.After = ev.ID
				return nil
			})
			resp.Body.Close()
			if ctx.Err() != nil {
				return nil
			}
			var ce callbackError
			if errors.As(err, &ce) {
				return ce.err
			}
			if got {
				delay = 250 * time.Millisecond
			}
			if err == nil {
				err = io.EOF
			}
			note(fmt.Sprintf("events: stream ended (%v); resuming from id %d", err, q.After))
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		delay = min(delay*2, 10*time.Second)
	}
}

func (c *Client) openFollow(ctx context.Context, q EventQuery) (*http.Response, error) {
	v := q.values()
	v.Set("follow", "1")
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url("/v1/events", v), nil)
	if err != nil {
		return nil, err
	}
	if q.After > 0 {
		req.Header.Set("Last-Event-ID", strconv.FormatInt(q.After, 10))
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, c.transportError(err)
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		return nil, decodeError(resp)
	}
	return resp, nil
}

// callbackError marks an error of FollowEvents' fn, which ends following.
type callbackError struct{ err error }

func (e callbackError) Error() string { return e.err.Error() }

// readSSE reads Server-Sent Events from r and calls fn with each event's
// data; it reports whether it got any event.
func readSSE(r io.Reader, fn func(api.Event) error) (bool, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	var (
		data  strings.Builder
		event string
		got   bool
	)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if data.Len() > 0 {
				if event == "error" {
					return got, fmt.Errorf("server: %s", data.String())
				}
				var ev api.Event
				if err := json.Unmarshal([]byte(data.String()), &ev); err != nil {
					return got, fmt.Errorf("bad event from the server: %w", err)
				}
				got = true
				if err := fn(ev); err != nil {
					return got, callbackError{err}
				}
			}
			data.Reset()
			event = ""
		case strings.HasPrefix(line, ":"):
		case strings.HasPrefix(line, "data:"):
			if data.Len() > 0 {
				data.WriteByte('\n')
			}
			data.WriteString(strings.TrimPrefix(strings.TrimPrefix(line, "data:"), " "))
		case strings.HasPrefix(line, "event:"):
			event = strings.TrimSpace(strings.TrimPrefix(line, "event:"))
		}
	}
	return got, sc.Err()
}
