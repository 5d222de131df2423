package service

import "testing"

func TestCheckLabels(t *testing.T) {
	tests := []struct {
		labels map[string]string
		ok     bool
	}{
		{nil, true},
		{map[string]string{"env": "prod", "region": "trd", "rack": "any/thing"}, true},
		{map[string]string{"env": "pre-prod_2"}, true},
		{map[string]string{"env": "../x", "region": "trd"}, false},
		{map[string]string{"env": "prod", "region": "a/b"}, false},
		{map[string]string{"env": "prod", "region": "eu..west"}, false},
		{map[string]string{"env": ".", "region": "x"}, false},
		{map[string]string{"env": "prod", "region": "eu.west"}, false}, // one word: the coordinate splits on '.'
	}
	for _, tt := range tests {
		if err := CheckLabels(tt.labels); (err == nil) != tt.ok {
			t.Errorf("CheckLabels(%v) = %v, want ok %v", tt.labels, err, tt.ok)
		}
	}
}
