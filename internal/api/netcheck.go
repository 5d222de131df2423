package api

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// NetCheck is one network check of a service (JPackages' monitor.up.net):
// other devices connect to the service's device to see that it is
// reachable over the network, not only up locally. Exactly one of TCP
// (a port that must accept a connection) and HTTP (a URL path that must
// answer below 400 on Port) is set.
type NetCheck struct {
	TCP  int    `json:"tcp,omitempty" yaml:"tcp,omitempty"`
	HTTP string `json:"http,omitempty" yaml:"http,omitempty"`
	Port int    `json:"port,omitempty" yaml:"port,omitempty"`
}

// maxCheckPath bounds an HTTP check's path.
const maxCheckPath = 1024

// Validate checks the shape of c.
func (c NetCheck) Validate() error {
	validPort := func(p int) bool { return p >= 1 && p <= 65535 }
	switch {
	case c.TCP != 0 && c.HTTP != "":
		return errors.New("want tcp: PORT or http: PATH (with port: PORT), not both")
	case c.TCP != 0:
		if !validPort(c.TCP) {
			return fmt.Errorf("tcp: port %d: want 1 to 65535", c.TCP)
		}
		if c.Port != 0 {
			return errors.New("tcp: the port is tcp's value; port: is for http checks")
		}
	case c.HTTP != "":
		if !strings.HasPrefix(c.HTTP, "/") || len(c.HTTP) > maxCheckPath || strings.ContainsFunc(c.HTTP, func(r rune) bool { return r <= ' ' || r == 0x7f || r == '#' }) {
			return fmt.Errorf("http: path %q: want an absolute URL path like /healthz, without spaces", c.HTTP)
		}
		if !validPort(c.Port) {
			return fmt.Errorf("http %s: port %d: want 1 to 65535", c.HTTP, c.Port)
		}
	default:
		return errors.New("want tcp: PORT or http: PATH with port: PORT")
	}
	return nil
}

// TargetPort is the port the check connects to.
func (c NetCheck) TargetPort() int {
	if c.TCP != 0 {
		return c.TCP
	}
	return c.Port
}

// String names the check: tcp:8080 or http:8080/healthz.
func (c NetCheck) String() string {
	if c.TCP != 0 {
		return "tcp:" + strconv.Itoa(c.TCP)
	}
	return "http:" + strconv.Itoa(c.Port) + c.HTTP
}

// Network reachability of a running service, as its peers see it
// (ServiceState.Network).
const (
	ServiceReachable   = "reachable"
	ServiceUnreachable = "unreachable"
)

// Unreachable reports that s runs but its peers cannot reach it over its
// network checks: a service in this state counts as unhealthy.
func (s ServiceState) Unreachable() bool {
	return s.State == ServiceRunning && s.Network == ServiceUnreachable
}

// Events of network checks, on the device whose service they are about.
const (
	KindServiceUnreachable = "service-unreachable" // up locally, unreachable from its peers
	KindServiceReachable   = "service-reachable"   // reachable again
)

// Probe is a network check the server asks an agent to run against a
// service of another device (ReportResponse.Probes).
type Probe struct {
	Device  string   `json:"device"`  // whose service
	Service string   `json:"service"` // its coordinate (ServiceState.Coordinate)
	Check   NetCheck `json:"check"`
	// Addr is host:port to connect to: the device's address as the
	// server saw it, and the check's port.
	Addr string `json:"addr"`
}

// ProbeResult is the outcome of one Probe (Report.ProbeResults).
type ProbeResult struct {
	Device  string    `json:"device"`
	Service string    `json:"service"`
	Check   string    `json:"check"` // NetCheck.String()
	OK      bool      `json:"ok"`
	Error   string    `json:"error,omitempty"`
	At      time.Time `json:"at"`
}

// NetObservation is the latest result one peer had of one check of a
// device's service, kept by the server in the device's record
// (Device.NetObservations) to decide ServiceState.Network.
type NetObservation struct {
	Service string    `json:"service"`
	Check   string    `json:"check"`
	Prober  string    `json:"prober"`
	OK      bool      `json:"ok"`
	Error   string    `json:"error,omitempty"`
	At      time.Time `json:"at"`
}
