// Command drover-screenshots makes the pictures of the fleet page in
// docs/ui/ with a real server and a real headless Chromium:
//
//	go run ./cmd/drover-screenshots [-out docs/ui] [-chromium /usr/bin/chromium]
//
// Exit 0 on success, 1 on failure; an error is one line on stderr.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/drover-dev/drover/internal/screenshot"
)

func main() {
	out := flag.String("out", "docs/ui", "folder for the PNG files")
	chromium := flag.String("chromium", envOr("DROVER_TEST_CHROMIUM", "/usr/bin/chromium"), "Chromium binary")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := screenshot.Take(ctx, screenshot.Config{Chromium: *chromium, Out: *out, Log: os.Stdout}); err != nil {
		fmt.Fprintf(os.Stderr, "drover-screenshots: %v\n", err)
		stop()
		os.Exit(1)
	}
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
