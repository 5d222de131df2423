package server

import (
	"fmt"
	"testing"
	"time"
)

func TestQuotaWindows(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	q := newQuotas(QuotaConfig{Events: 3, EventBytes: 100, MaxEvent: 50, Reports: 2, Window: time.Minute}, func() time.Time { return now })
	steps := []struct {
		name  string
		dev   string
		sizes []int // nil: a report
		admit int
		warn  bool
		after time.Duration // clock moves by this before the step
		retry int
	}{
		{name: "fits", dev: "d1", sizes: []int{10, 10}, admit: 2},
		{name: "count quota cuts the batch", dev: "d1", sizes: []int{10, 10}, admit: 1, warn: true, after: 30 * time.Second, retry: 30},
		{name: "still over: no second warning", dev: "d1", sizes: []int{1}, admit: 0, retry: 30},
		{name: "another device has its own", dev: "d2", sizes: []int{50, 50}, admit: 2},
		{name: "bytes quota", dev: "d2", sizes: []int{1}, admit: 0, warn: true, retry: 60},
		{name: "new window", dev: "d1", sizes: []int{10, 10, 10}, admit: 3, after: 30 * time.Second},
		{name: "reports", dev: "d3", admit: 1},
		{name: "reports 2", dev: "d3", admit: 1},
		{name: "reports over", dev: "d3", admit: 0, warn: true, retry: 60},
	}
	for _, s := range steps {
		now = now.Add(s.after)
		var v quotaVerdict
		if s.sizes == nil {
			v = q.report(s.dev)
		} else {
			v = q.events(s.dev, s.sizes)
		}
		if v.Admit != s.admit || v.Warn != s.warn || v.RetryAfter != s.retry {
			t.Errorf("%s: verdict %+v, want admit %d, warn %v, retry after %d", s.name, v, s.admit, s.warn, s.retry)
		}
	}
}

// Quota state stays bounded: devices idle for a window are forgotten.
func TestQuotaStateBounded(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	q := newQuotas(QuotaConfig{}, func() time.Time { return now })
	for i := range 10000 {
		q.events(fmt.Sprintf("d%d", i), []int{1})
	}
	if n := q.tracked(); n != 10000 {
		t.Fatalf("tracked %d devices, want 10000", n)
	}
	now = now.Add(2 * time.Minute)
	q.events("late", []int{1})
	if n := q.tracked(); n != 1 {
		t.Errorf("after a window idle, tracked %d devices, want 1", n)
	}
}

func TestQuotaConfigValidate(t *testing.T) {
	if err := (QuotaConfig{EventBytes: 1000, MaxEvent: 2000}).Validate(); err == nil {
		t.Error("Validate accepted a byte quota smaller than one event")
	}
	if err := (QuotaConfig{}).Validate(); err != nil {
		t.Errorf("Validate(defaults) = %v", err)
	}
}
