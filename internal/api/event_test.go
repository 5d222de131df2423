package api

import "testing"

func TestEventNormalize(t *testing.T) {
	tests := []struct {
		name        string
		ev          Event
		level, prio string
		wantErr     bool
	}{
		{"defaults info medium", Event{Kind: KindLog}, LevelInfo, PriorityMedium, false},
		{"error defaults high", Event{Kind: KindLog, Level: LevelError}, LevelError, PriorityHigh, false},
		{"warn defaults medium", Event{Kind: KindLog, Level: LevelWarn}, LevelWarn, PriorityMedium, false},
		{"priority kept", Event{Kind: KindLog, Level: LevelError, Priority: PriorityLow}, LevelError, PriorityLow, false},
		{"unknown level", Event{Kind: KindLog, Level: "fatal"}, "", "", true},
		{"unknown priority", Event{Kind: KindLog, Priority: "urgent"}, "", "", true},
		{"no kind", Event{}, "", "", true},
		{"kind with a path", Event{Kind: "../../etc"}, "", "", true},
		{"kind with a slash", Event{Kind: "a/b"}, "", "", true},
		{"dotted kind", Event{Kind: "step-done.v2"}, LevelInfo, PriorityMedium, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev := tt.ev
			err := ev.Normalize()
			if (err != nil) != tt.wantErr {
				t.Fatalf("Normalize(%+v) = %v, want error %v", tt.ev, err, tt.wantErr)
			}
			if err == nil && (ev.Level != tt.level || ev.Priority != tt.prio) {
				t.Errorf("Normalize(%+v) gave %s/%s, want %s/%s", tt.ev, ev.Level, ev.Priority, tt.level, tt.prio)
			}
		})
	}
}
