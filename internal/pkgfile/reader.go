package pkgfile

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"math"
	"slices"
	"strings"

	"github.com/klauspost/compress/zstd"

	"github.com/drover-dev/drover/internal/api"
)

// Default limits of a Reader.
const (
	DefaultMaxManifest = 16 << 20
	DefaultMaxBlob     = 4 << 30
	DefaultMaxTotal    = 16 << 30
	DefaultMaxEntries  = 1_000_000
)

// maxWindow bounds the memory a hostile zstd frame can make the decoder
// allocate. The builder's level uses an 8 MiB window.
const maxWindow = 64 << 20

// Limits bound what a Reader accepts. A zero field takes its default.
type Limits struct {
	MaxManifest int64 // bytes of manifest.json; default 16 MiB
	MaxBlob     int64 // bytes of one blob; default 4 GiB
	MaxTotal    int64 // bytes of all entries together; default 16 GiB
	MaxEntries  int   // entries, manifest included; default 1,000,000
}

func (l Limits) withDefaults() Limits {
	if l.MaxManifest <= 0 {
		l.MaxManifest = DefaultMaxManifest
	}
	if l.MaxBlob <= 0 {
		l.MaxBlob = DefaultMaxBlob
	}
	if l.MaxTotal <= 0 {
		l.MaxTotal = DefaultMaxTotal
	}
	if l.MaxEntries <= 0 {
		l.MaxEntries = DefaultMaxEntries
	}
	return l
}

// Reader streams a package file, which it treats as hostile: the manifest
// must be the first entry and valid; every other entry must be a regular
// file named blobs/<sha256 hex> that the manifest refers to, appears once,
// fits the limits and hashes to its name. Anything else is an error that
// wraps ErrInvalid and names the entry.
//
// Read hands out a blob's bytes before its digest can be checked, so
// callers must stage them and commit only when Read has returned io.EOF.
// A Reader is not safe for concurrent use.
type Reader struct {
	lim      Limits
	src      *srcReader
	zr       *zstd.Decoder
	tr       *tar.Reader
	m        *api.Manifest
	mjson    []byte
	digest   string
	wanted   map[string]bool  // digests the manifest refers to
	sizes    map[string]int64 // declared sizes of file blobs
	seen     map[string]bool  // blobs read so far
	entries  int
	total    int64
	cur      string // digest of the current blob, "" before the first
	h        hash.Hash
	left     int64 // bytes of the current blob not yet read
	verified bool  // the current blob's digest has been checked
	err      error // sticky: once failed, every call fails the same way
}

// NewReader starts reading the package file r, reading and validating
// manifest.json, which must be its first entry.
func NewReader(r io.Reader, lim Limits) (*Reader, error) {
	lim = lim.withDefaults()
	src := &srcReader{r: r}
	zr, err := zstd.NewReader(src, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(maxWindow))
	if err != nil {
		return nil, fmt.Errorf("package file: %w", err)
	}
	// Tar headers, padding and special entries are not counted in entry
	// sizes; bound the decompressed stream too, so that a small input
	// cannot keep the reader busy forever.
	overhead := int64(lim.MaxEntries+2)*2048 + 16<<20
	capped := &capReader{r: zr, left: satAdd(satAdd(lim.MaxTotal, lim.MaxManifest), overhead)}
	pr := &Reader{
		lim:    lim,
		src:    src,
		zr:     zr,
		tr:     tar.NewReader(capped),
		wanted: map[string]bool{},
		sizes:  map[string]int64{},
		seen:   map[string]bool{},
	}
	if err := pr.readManifest(); err != nil {
		zr.Close()
		return nil, err
	}
	return pr, nil
}

// satAdd adds non-negative a and b, saturating at math.MaxInt64 so that
// generous custom limits cannot wrap around.
func satAdd(a, b int64) int64 {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

// srcReader remembers the first error of the underlying reader, so that a
// failing disk or connection is not mistaken for a bad package file.
type srcReader struct {
	r   io.Reader
	err error
}

func (s *srcReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF && s.err == nil {
		s.err = err
	}
	return n, err
}

// capReader fails once more than left bytes have been read.
type capReader struct {
	r    io.Reader
	left int64
}

func (c *capReader) Read(p []byte) (int, error) {
	if c.left <= 0 {
		return 0, invalidf("package file: decompressed stream larger than the limits allow")
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	return n, err
}

// next reads the next tar header and checks what every entry must pass.
func (r *Reader) next() (*tar.Header, error) {
	hdr, err := r.tr.Next()
	if err == io.EOF {
		return nil, io.EOF
	}
	if err != nil {
		return nil, r.streamError("package file", err)
	}
	r.entries++
	if r.entries > r.lim.MaxEntries {
		return nil, invalidf("package file: more than %d entries", r.lim.MaxEntries)
	}
	if hdr.Typeflag != tar.TypeReg {
		return nil, invalidf("package file: entry %q: %s; only regular files are allowed", hdr.Name, typeName(hdr.Typeflag))
	}
	if hdr.Size < 0 {
		return nil, invalidf("package file: entry %q: negative size", hdr.Name)
	}
	// The first entry is the manifest, or the archive is refused anyway.
	limit := r.lim.MaxBlob
	if r.entries == 1 {
		limit = r.lim.MaxManifest
	}
	if hdr.Size > limit {
		return nil, invalidf("package file: entry %q: %d bytes, more than %d", hdr.Name, hdr.Size, limit)
	}
	r.total += hdr.Size
	if r.total > r.lim.MaxTotal {
		return nil, invalidf("package file: entry %q: entries larger than %d bytes together", hdr.Name, r.lim.MaxTotal)
	}
	return hdr, nil
}

// streamError turns an error from the decompressor or tar reader into one
// wrapping ErrInvalid, unless it came from the underlying reader: that one
// is returned wrapped as it is, for the caller to retry or report.
func (r *Reader) streamError(where string, err error) error {
	switch {
	case r.src.err != nil:
		return fmt.Errorf("%s: %w", where, r.src.err)
	case errors.Is(err, ErrInvalid):
		return err
	case errors.Is(err, zstd.ErrMagicMismatch):
		return invalidf("%s: not zstd-compressed", where)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return invalidf("%s: truncated", where)
	}
	return invalidf("%s: %v", where, err)
}

func typeName(t byte) string {
	switch t {
	case tar.TypeDir:
		return "a directory"
	case tar.TypeSymlink:
		return "a symlink"
	case tar.TypeLink:
		return "a hard link"
	case tar.TypeChar:
		return "a character device"
	case tar.TypeBlock:
		return "a block device"
	case tar.TypeFifo:
		return "a named pipe"
	}
	return fmt.Sprintf("type %q", t)
}

func (r *Reader) readManifest() error {
	hdr, err := r.next()
	if err == io.EOF {
		return invalidf("package file: empty; want %s first", ManifestName)
	}
	if err != nil {
		return err
	}
	if hdr.Name != ManifestName {
		return invalidf("package file: first entry %q; want %s", hdr.Name, ManifestName)
	}
	data := make([]byte, hdr.Size)
	if _, err := io.ReadFull(r.tr, data); err != nil {
		return r.streamError("package file: "+ManifestName, err)
	}
	m, err := DecodeManifest(data)
	if err != nil {
		return err
	}
	for _, d := range m.Digests() {
		r.wanted[d] = true
	}
	for _, f := range m.Files {
		if f.Type == api.TypeFile {
			r.sizes[f.Digest] = f.Size
		}
	}
	sum := sha256.Sum256(data)
	r.m, r.mjson, r.digest = m, data, hex.EncodeToString(sum[:])
	return nil
}

// Manifest returns the validated manifest.
func (r *Reader) Manifest() *api.Manifest { return r.m }

// ManifestJSON returns the exact bytes of manifest.json. Callers must not
// modify them.
func (r *Reader) ManifestJSON() []byte { return r.mjson }

// Digest returns the SHA-256 of manifest.json in hex: the build's identity.
func (r *Reader) Digest() string { return r.digest }

// Next advances to the next blob and returns its digest and size. A blob
// not read to its end is read and verified here. After the last blob Next
// returns io.EOF, unless a blob the manifest refers to was missing, which
// is an error naming its digest.
func (r *Reader) Next() (digest string, size int64, err error) {
	if r.err != nil {
		return "", 0, r.err
	}
	if r.cur != "" && !r.verified {
		if _, err := io.Copy(io.Discard, r); err != nil {
			return "", 0, err
		}
	}
	hdr, err := r.next()
	if err == io.EOF {
		r.cur = ""
		return "", 0, r.fail(r.checkComplete())
	}
	if err != nil {
		return "", 0, r.fail(err)
	}
	d, ok := strings.CutPrefix(hdr.Name, blobPrefix)
	switch {
	case hdr.Name == ManifestName:
		return "", 0, r.fail(invalidf("package file: entry %q: a second manifest", hdr.Name))
	case !ok || !api.ValidDigest(d):
		return "", 0, r.fail(invalidf("package file: entry %q: want blobs/<sha256 hex>", hdr.Name))
	case r.seen[d]:
		return "", 0, r.fail(invalidf("package file: entry %q: blob listed twice", hdr.Name))
	case !r.wanted[d]:
		return "", 0, r.fail(invalidf("package file: entry %q: blob the manifest does not refer to", hdr.Name))
	}
	if s, ok := r.sizes[d]; ok && s != hdr.Size {
		return "", 0, r.fail(invalidf("package file: entry %q: %d bytes, the manifest says %d", hdr.Name, hdr.Size, s))
	}
	r.seen[d] = true
	r.cur, r.left, r.verified = d, hdr.Size, false
	r.h = sha256.New()
	return d, hdr.Size, nil
}

// checkComplete returns io.EOF if every blob the manifest refers to was
// present, else an error naming the first missing one.
func (r *Reader) checkComplete() error {
	var missing []string
	for d := range r.wanted {
		if !r.seen[d] {
			missing = append(missing, d)
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		return invalidf("package file: blob %s is missing (%d missing in all)", missing[0], len(missing))
	}
	return io.EOF
}

// Read reads the current blob. At its end it checks the SHA-256 and
// returns an error wrapping ErrDigestMismatch (and ErrInvalid) if the
// content does not hash to the blob's name; else io.EOF.
func (r *Reader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if r.cur == "" {
		return 0, errors.New("package file: Read before Next")
	}
	if r.verified {
		return 0, io.EOF
	}
	if r.left == 0 {
		return 0, r.verify()
	}
	if int64(len(p)) > r.left {
		p = p[:r.left]
	}
	n, err := r.tr.Read(p)
	r.h.Write(p[:n])
	r.left -= int64(n)
	if err == io.EOF && r.left > 0 {
		err = io.ErrUnexpectedEOF
	}
	if err != nil && err != io.EOF {
		return n, r.fail(r.streamError("package file: blob "+r.cur, err))
	}
	if r.left == 0 {
		return n, r.verify()
	}
	return n, nil
}

// verify checks the current blob's digest once all its bytes were read.
func (r *Reader) verify() error {
	r.verified = true
	if got := hex.EncodeToString(r.h.Sum(nil)); got != r.cur {
		return r.fail(fmt.Errorf("%w: package file: blob %s: content hashes to %s: %w", ErrInvalid, r.cur, got, ErrDigestMismatch))
	}
	return io.EOF
}

// fail makes err sticky, except io.EOF.
func (r *Reader) fail(err error) error {
	if err != io.EOF {
		r.err = err
	}
	return err
}

// Close releases the decompressor. It does not close the underlying
// reader.
func (r *Reader) Close() error {
	r.zr.Close()
	return nil
}
