package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/pkgfile"
	"github.com/drover-dev/drover/internal/push"
)

func pkgCmd(e *env) *cobra.Command {
	var conn connFlags
	c := operatorCmd("pkg", "Build packages and manage the server's package repository", &conn)
	c.AddCommand(pkgBuildCmd(e), pkgPushCmd(e, &conn), pkgLsCmd(e, &conn), pkgRmCmd(e, &conn))
	return c
}

func pkgBuildCmd(e *env) *cobra.Command {
	var out string
	c := &cobra.Command{
		Use:   "build DIR [-o FILE]",
		Short: "Build a package file from a source folder (reproducible: same input, same bytes)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir := args[0]
			var buf bytes.Buffer
			m, _, digest, err := pkgfile.Build(dir, &buf)
			if err != nil {
				return err
			}
			if out == "" {
				out = fmt.Sprintf("%s-%s-%s%s.drover", m.Group, m.Name, m.Version, tagSuffix(m.Tags))
			}
			if err := writeFileAtomic(out, buf.Bytes()); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "%s\t%s\t[%s]\t%d files\t%s\n", out, m.Coordinate(), strings.Join(m.Tags, ","), len(m.Files), digest)
			return nil
		},
	}
	c.Flags().StringVarP(&out, "output", "o", "", "package file to write (default GROUP-NAME-VERSION[-TAGS].drover)")
	return c
}

func tagSuffix(tags []string) string {
	if len(tags) == 0 {
		return ""
	}
	return "-" + strings.Join(tags, "_")
}

// writeFileAtomic writes data to path through a temporary file, so a
// failed build never leaves half a package file.
func writeFileAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func pkgPushCmd(e *env, conn *connFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "push FILE...",
		Short: "Upload package files; only the blobs the server lacks are sent",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := conn.client()
			if err != nil {
				return err
			}
			defer cl.Close()
			for _, path := range args {
				if err := pushOne(cmd, e, cl, path); err != nil {
					return err
				}
			}
			return nil
		},
	}
}

func pushOne(cmd *cobra.Command, e *env, cl push.Uploader, path string) error {
	var progress push.Progress
	var bars *mpb.Progress
	if isTerminal(e.stderr) {
		// The bar goes to stderr so stdout stays a clean record for scripts.
		bars = mpb.New(mpb.WithOutput(e.stderr), mpb.WithWidth(40))
		var bar *mpb.Bar
		progress = func(sent, total int64) {
			if bar == nil {
				bar = bars.AddBar(total,
					mpb.PrependDecorators(decor.Name(filepath.Base(path), decor.WCSyncSpaceR)),
					mpb.AppendDecorators(decor.CountersKibiByte("% .1f / % .1f"), decor.Percentage(decor.WCSyncSpace)))
			}
			bar.SetTotal(total, false)
			bar.SetCurrent(sent)
		}
		defer func() {
			if bar != nil {
				bar.SetTotal(-1, true)
			}
			bars.Wait()
		}()
	}
	res, err := push.File(cmd.Context(), cl, path, progress)
	if err != nil {
		return err
	}
	b := res.Build
	fmt.Fprintf(e.stdout, "pushed %s [%s] %s (%d of %d blobs uploaded, %d bytes)\n",
		b.Coordinate, strings.Join(b.Tags, ","), b.Digest[:12], res.Sent, res.Blobs, res.SentBytes)
	return nil
}

func pkgLsCmd(e *env, conn *connFlags) *cobra.Command {
	var format string
	c := &cobra.Command{
		Use:   "ls [NAME]",
		Short: "List coordinates, their builds and tags (NAME is group:name)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(format, outText, outYAML, outJSON); err != nil {
				return err
			}
			name := ""
			if len(args) == 1 {
				name = args[0]
				if _, _, err := api.ParsePackageName(name); err != nil {
					return usageError{err}
				}
			}
			cl, err := conn.client()
			if err != nil {
				return err
			}
			defer cl.Close()
			builds, err := cl.Packages(cmd.Context(), name)
			if err != nil {
				return err
			}
			if format != outText {
				return printAs(e.stdout, format, builds)
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "COORDINATE\tTAGS\tINSTALL\tFILES\tSIZE\tDIGEST")
			for _, b := range builds {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\n", b.Coordinate, strings.Join(b.Tags, ","), b.Install, b.Files, b.Size, b.Digest[:12])
			}
			return tw.Flush()
		},
	}
	addOutputFlag(c, &format, outText)
	return c
}

func pkgRmCmd(e *env, conn *connFlags) *cobra.Command {
	var tags string
	var force bool
	c := &cobra.Command{
		Use:   "rm COORDINATE [--tags a,b] [--force]",
		Short: "Remove the builds of a coordinate (only the build with exactly --tags, when given)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := api.ParseCoordinate(args[0]); err != nil {
				return usageError{err}
			}
			var tl []string
			if cmd.Flags().Changed("tags") {
				tl = splitList(tags)
				if tl == nil {
					tl = []string{}
				}
			}
			cl, err := conn.client()
			if err != nil {
				return err
			}
			defer cl.Close()
			n, err := cl.RemovePackage(cmd.Context(), args[0], tl, force)
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "removed %d build(s) of %s\n", n, args[0])
			return nil
		},
	}
	c.Flags().StringVar(&tags, "tags", "", "remove only the build with exactly these tags (comma separated)")
	c.Flags().BoolVar(&force, "force", false, "remove builds that some device's effective desired state still uses")
	return c
}

// splitList splits "a,b, c" into its non-empty parts.
func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
