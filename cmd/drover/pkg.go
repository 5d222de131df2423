package main

import (
	"bytes"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/atomicfile"
	"github.com/drover-dev/drover/internal/output"
	"github.com/drover-dev/drover/internal/pkgfile"
	"github.com/drover-dev/drover/internal/push"
	"github.com/drover-dev/drover/internal/trust"
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
			if err := atomicfile.WriteFile(out, buf.Bytes(), 0o644); err != nil {
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

func pkgPushCmd(e *env, conn *connFlags) *cobra.Command {
	var format, signKey string
	c := &cobra.Command{
		Use:   "push FILE... [--sign-key K/targets.key]",
		Short: "Upload package files; only the blobs the server lacks are sent",
		Long: "Upload package files; only the blobs the server lacks are sent.\n\n" +
			"With --sign-key (or DROVER_SIGN_KEY) the builds are also signed into the server's targets\n" +
			"metadata with that targets key, so agents run with --trust-root install them.",
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(format, outText, outYAML, outJSON); err != nil {
				return err
			}
			var key *trust.Key
			if path := orEnv(signKey, "DROVER_SIGN_KEY", ""); path != "" {
				var err error
				if key, err = trust.LoadKey(path); err != nil {
					return err
				}
			}
			cl, err := conn.client()
			if err != nil {
				return err
			}
			defer cl.Close()
			results := []pushed{}
			var signed []trust.Build
			for _, path := range args {
				r, err := pushOne(cmd, e, cl, path)
				if err != nil {
					return err
				}
				if format == outText {
					printPushed(e, r)
				}
				results = append(results, r)
				signed = append(signed, trust.Build{Coordinate: r.Build.Coordinate, Tags: r.Build.Tags,
					Digest: r.Build.Digest, Length: r.manifestSize})
			}
			if key != nil {
				if err := trust.SignBuilds(cmd.Context(), cl, key, signed, time.Now()); err != nil {
					return err
				}
				for i := range results {
					results[i].SignedBy = key.ID
				}
				if format == outText {
					fmt.Fprintf(e.stdout, "signed %d builds with targets key %s\n", len(signed), key.ID[:12])
				}
			}
			if format != outText {
				return printAs(e.stdout, format, results)
			}
			return nil
		},
	}
	c.Flags().StringVar(&signKey, "sign-key", "", "targets key to sign the builds with (env DROVER_SIGN_KEY)")
	addOutputFlag(c, &format, outText)
	return c
}

// pushed is what `pkg push -o json|yaml` prints of each file.
type pushed struct {
	api.Build     `yaml:",inline"`
	Blobs         int   `json:"blobs" yaml:"blobs"`
	Uploaded      int   `json:"uploaded" yaml:"uploaded"`
	UploadedBytes int64 `json:"uploaded_bytes" yaml:"uploaded_bytes"`
	// SignedBy is the id of the targets key that signed the build, if any.
	SignedBy string `json:"signed_by,omitempty" yaml:"signed_by,omitempty"`

	manifestSize int64 // the signed target's length
}

func printPushed(e *env, r pushed) {
	b := r.Build
	if b.AlreadyPushed {
		fmt.Fprintf(e.stdout, "already pushed %s [%s] %s: nothing changed (%d of %d blobs uploaded)\n",
			b.Coordinate, strings.Join(b.Tags, ","), b.Digest[:12], r.Uploaded, r.Blobs)
		return
	}
	fmt.Fprintf(e.stdout, "pushed %s [%s] %s (%d of %d blobs uploaded, %s)\n",
		b.Coordinate, strings.Join(b.Tags, ","), b.Digest[:12], r.Uploaded, r.Blobs, output.Bytes(r.UploadedBytes))
}

func pushOne(cmd *cobra.Command, e *env, cl push.Uploader, path string) (pushed, error) {
	var progress push.Progress
	var bars *mpb.Progress
	if output.IsTerminal(e.stderr) {
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
		return pushed{}, err
	}
	return pushed{Build: res.Build, Blobs: res.Blobs, Uploaded: res.Sent, UploadedBytes: res.SentBytes, manifestSize: res.ManifestSize}, nil
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
			tb := output.NewTable(e.stdout, "COORDINATE", "TAGS", "INSTALL", "FILES", "SIZE", "DIGEST")
			for _, b := range builds {
				tb.Row(b.Coordinate, strings.Join(b.Tags, ","), b.Install, strconv.Itoa(b.Files), output.Bytes(b.Size), b.Digest[:12])
			}
			return tb.Flush()
		},
	}
	addOutputFlag(c, &format, outText)
	return c
}

func pkgRmCmd(e *env, conn *connFlags) *cobra.Command {
	var tags, format string
	var force bool
	c := &cobra.Command{
		Use:   "rm COORDINATE [--tags a,b] [--force]",
		Short: "Remove the builds of a coordinate (only the build with exactly --tags, when given)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := api.ParseCoordinate(args[0]); err != nil {
				return usageError{err}
			}
			if err := checkOutput(format, outText, outYAML, outJSON); err != nil {
				return err
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
			if format != outText {
				return printAs(e.stdout, format, struct {
					Coordinate string `json:"coordinate" yaml:"coordinate"`
					Removed    int    `json:"removed" yaml:"removed"`
				}{args[0], n})
			}
			fmt.Fprintf(e.stdout, "removed %d build(s) of %s\n", n, args[0])
			return nil
		},
	}
	c.Flags().StringVar(&tags, "tags", "", "remove only the build with exactly these tags (comma separated)")
	addOutputFlag(c, &format, outText)
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
