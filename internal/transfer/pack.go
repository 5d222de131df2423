// Package transfer holds the formats drover uses to move blobs in fewer
// bytes than their size: the pack stream (many blobs, and deltas of
// blobs, in one zstd stream so that compression works across files), the
// per-file delta (zstd with the old version of a file as its dictionary),
// the x86 filter that makes machine code compress better, byte sizes as
// people write them, and the estimate of the bytes an
// install or an upgrade moves. Server and agent both use it; it does no
// I/O of its own beyond the readers and writers it is given.
package transfer

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"

	"github.com/drover-dev/drover/internal/api"
)

// PackContentType is the media type of a pack stream.
const PackContentType = "application/vnd.drover.pack+zstd"

// packMagic opens every pack stream of format 1 (after decompression),
// so a stream of some other format is refused at its first bytes;
// packMagic2 opens those of format 2.
const (
	packMagic  = "DRPACK1\n"
	packMagic2 = "DRPACK2\n"
)

// PackFormat2 is the pack format a request asks for with
// api.PackRequest.Format. Format 1 (every agent before it) names each
// entry by its digests. Format 2 names it by its place in the request's
// digest list (the base of a delta is the one the request gave), which
// saves 32 bytes an entry, and has KindFiltered entries. A reader tells
// the two apart by their first bytes, so an agent asking for format 2
// reads the format 1 answer of an older server.
const PackFormat2 = 2

// Kind says what a pack entry carries.
type Kind byte

// Entry kinds.
const (
	// KindBlob is a blob's whole content.
	KindBlob Kind = 'B'
	// KindDelta is a delta (MakeDelta) that turns the blob Base, which
	// the receiver has, into the blob Digest.
	KindDelta Kind = 'D'
	// KindFiltered (format 2 only) is a blob's whole content passed
	// through FilterX86. A reader undoes the filter and returns the entry
	// as KindBlob.
	KindFiltered Kind = 'F'
	// kindEnd closes the stream: a stream without it was cut short.
	kindEnd Kind = 'E'
)

// PackWindow is the zstd window of a pack stream: matches reach this far
// back, across files. The decoder accepts no larger window, which bounds
// its memory.
const PackWindow = 64 << 20

// minPackWindow is the smallest window a pack declares.
const minPackWindow = 1 << 20

// packWindow is the power of two from minPackWindow to PackWindow that
// covers size bytes, so matches reach across the whole pack.
func packWindow(size int64) int {
	w := minPackWindow
	for int64(w) < size && w < PackWindow {
		w <<= 1
	}
	return w
}

// MaxDeltaWindow bounds the window of a delta frame (base + target); the
// decoder refuses larger ones.
const MaxDeltaWindow = 256 << 20

// ErrTruncated means a pack stream ended before its end record: the
// connection dropped. The entries read before it are whole and usable.
var ErrTruncated = errors.New("pack stream cut short")

// ErrMalformed means a pack stream or a delta is not well formed.
var ErrMalformed = errors.New("malformed pack stream")

// PackWriter writes a pack stream. It is not safe for concurrent use.
type PackWriter struct {
	zw    *zstd.Encoder
	out   *countWriter
	hdr   []byte
	index map[string]int // format 2: an entry's place in the request
}

// countWriter counts the bytes written through it.
type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// NewPackWriter returns a writer of a pack stream onto w, compressed at
// zstd's best level over a window that covers size, the bytes the pack
// will carry at most (PackWindow at most). The reader allocates the window
// the stream declares, so a small pack must not declare a large one: a
// 64 MiB window for a pack of a few files cost every download 64 MiB.
func NewPackWriter(w io.Writer, size int64) (*PackWriter, error) {
	return newPackWriter(w, size, nil)
}

// NewPackWriter2 is NewPackWriter for a format 2 stream answering a
// request for digests: every entry written must be one of them.
func NewPackWriter2(w io.Writer, size int64, digests []string) (*PackWriter, error) {
	index := make(map[string]int, len(digests))
	for i, d := range digests {
		index[d] = i
	}
	return newPackWriter(w, size, index)
}

func newPackWriter(w io.Writer, size int64, index map[string]int) (*PackWriter, error) {
	out := &countWriter{w: w}
	zw, err := zstd.NewWriter(out, zstd.WithEncoderLevel(zstd.SpeedBestCompression),
		zstd.WithWindowSize(packWindow(size)), zstd.WithEncoderConcurrency(1), zstd.WithEncoderCRC(true),
		zstd.WithLowerEncoderMem(true))
	if err != nil {
		return nil, fmt.Errorf("pack writer: %w", err)
	}
	magic := packMagic
	if index != nil {
		magic = packMagic2
	}
	if _, err := io.WriteString(zw, magic); err != nil {
		return nil, fmt.Errorf("pack writer: %w", err)
	}
	return &PackWriter{zw: zw, out: out, index: index}, nil
}

// Written returns the compressed bytes written so far. The encoder holds
// back up to a block (128 KiB), so an entry's share is known only about.
func (p *PackWriter) Written() int64 { return p.out.n }

func (p *PackWriter) header(kind Kind, digest, base string, size int64) error {
	p.hdr = append(p.hdr[:0], byte(kind))
	if p.index != nil && kind != kindEnd {
		i, ok := p.index[digest]
		if !ok {
			return fmt.Errorf("pack entry: %s was not asked for", digest)
		}
		p.hdr = binary.AppendUvarint(p.hdr, uint64(i))
		base = "" // the request names it
		digest = ""
	}
	for _, d := range []string{digest, base} {
		if d == "" {
			continue
		}
		raw, err := hex.DecodeString(d)
		if err != nil || len(raw) != sha256.Size {
			return fmt.Errorf("pack entry: invalid digest %q", d)
		}
		p.hdr = append(p.hdr, raw...)
	}
	if kind != kindEnd {
		p.hdr = binary.AppendUvarint(p.hdr, uint64(size))
	}
	_, err := p.zw.Write(p.hdr)
	return err
}

// Blob writes the whole blob digest of size bytes read from r.
func (p *PackWriter) Blob(digest string, size int64, r io.Reader) error {
	if err := p.header(KindBlob, digest, "", size); err != nil {
		return err
	}
	n, err := io.Copy(p.zw, io.LimitReader(r, size))
	if err == nil && n != size {
		err = fmt.Errorf("blob %s: %d of %d bytes: %w", digest, n, size, io.ErrUnexpectedEOF)
	}
	return err
}

// Filtered writes the whole blob digest, data, through FilterX86
// (format 2 only). It filters data in place.
func (p *PackWriter) Filtered(digest string, data []byte) error {
	if p.index == nil {
		return fmt.Errorf("blob %s: filtered entries need format 2", digest)
	}
	if len(data) > MaxFilterFile {
		return fmt.Errorf("blob %s: %d bytes, more than a filtered entry holds", digest, len(data))
	}
	if err := p.header(KindFiltered, digest, "", int64(len(data))); err != nil {
		return err
	}
	FilterX86(data)
	_, err := p.zw.Write(data)
	return err
}

// Delta writes a delta from base to digest.
func (p *PackWriter) Delta(digest, base string, delta []byte) error {
	if base == "" {
		return fmt.Errorf("delta of %s: no base", digest)
	}
	if err := p.header(KindDelta, digest, base, int64(len(delta))); err != nil {
		return err
	}
	_, err := p.zw.Write(delta)
	return err
}

// Flush sends what was written so far, so the receiver can start on it.
func (p *PackWriter) Flush() error { return p.zw.Flush() }

// Close writes the end record and finishes the stream; it does not close
// the underlying writer.
func (p *PackWriter) Close() error {
	if err := p.header(kindEnd, "", "", 0); err != nil {
		return err
	}
	return p.zw.Close()
}

// Entry is one entry of a pack stream.
type Entry struct {
	Kind   Kind
	Digest string
	// Base is the blob a delta applies to; empty for KindBlob.
	Base string
	// Size is the length of Body: the blob's size, or the delta's.
	Size int64
	// Body reads the entry's bytes; it is valid until the next call of
	// Next, which skips what was not read.
	Body io.Reader
}

// PackReader reads a pack stream. It is not safe for concurrent use.
type PackReader struct {
	req     api.PackRequest
	v2      bool
	zr      *zstd.Decoder
	br      *bufio.Reader
	maxSize func(e Entry) int64
	cur     *io.LimitedReader
	done    bool
}

// NewPackReader reads a pack stream from r, the answer to req (which
// names the entries of a format 2 stream). maxSize bounds each entry's
// size (by its kind and digests); an entry announcing more is refused
// with ErrMalformed before any of it is read, so a hostile stream cannot
// make the reader buffer or write without end. Close releases the
// decoder.
func NewPackReader(r io.Reader, req api.PackRequest, maxSize func(e Entry) int64) (*PackReader, error) {
	zr, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true),
		zstd.WithDecoderMaxWindow(PackWindow))
	if err != nil {
		return nil, fmt.Errorf("pack reader: %w", err)
	}
	p := &PackReader{req: req, zr: zr, br: bufio.NewReader(zr), maxSize: maxSize}
	magic := make([]byte, len(packMagic))
	_, err = io.ReadFull(p.br, magic)
	p.v2 = string(magic) == packMagic2
	if err != nil || string(magic) != packMagic && !p.v2 {
		zr.Close()
		if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("pack reader: %w", err)
		}
		return nil, fmt.Errorf("pack reader: no pack header: %w", ErrMalformed)
	}
	return p, nil
}

// Next returns the next entry, io.EOF after the end record, ErrTruncated
// if the stream stops before it, or ErrMalformed.
func (p *PackReader) Next() (Entry, error) {
	if p.done {
		return Entry{}, io.EOF
	}
	if p.cur != nil {
		if _, err := io.Copy(io.Discard, p.cur); err != nil {
			return Entry{}, p.readErr(err)
		}
		if p.cur.N > 0 {
			return Entry{}, ErrTruncated
		}
		p.cur = nil
	}
	k, err := p.br.ReadByte()
	if err != nil {
		return Entry{}, p.readErr(err)
	}
	e := Entry{Kind: Kind(k)}
	switch e.Kind {
	case kindEnd:
		// Nothing may follow the end record.
		if _, err := p.br.ReadByte(); err != io.EOF {
			if err == nil {
				return Entry{}, fmt.Errorf("data after the end record: %w", ErrMalformed)
			}
			return Entry{}, p.readErr(err)
		}
		p.done = true
		return Entry{}, io.EOF
	case KindBlob, KindDelta:
	case KindFiltered:
		if !p.v2 {
			return Entry{}, fmt.Errorf("filtered entry in a format 1 stream: %w", ErrMalformed)
		}
	default:
		return Entry{}, fmt.Errorf("unknown entry kind %q: %w", k, ErrMalformed)
	}
	if p.v2 {
		i, err := binary.ReadUvarint(p.br)
		if err != nil {
			return Entry{}, p.readErr(err)
		}
		if i >= uint64(len(p.req.Digests)) {
			return Entry{}, fmt.Errorf("entry %d of a request for %d: %w", i, len(p.req.Digests), ErrMalformed)
		}
		e.Digest = p.req.Digests[i]
		if e.Kind == KindDelta {
			if e.Base = p.req.Bases[e.Digest]; e.Base == "" {
				return Entry{}, fmt.Errorf("delta of %s, asked for without a base: %w", e.Digest, ErrMalformed)
			}
		}
	} else {
		if e.Digest, err = p.digest(); err != nil {
			return Entry{}, err
		}
		if e.Kind == KindDelta {
			if e.Base, err = p.digest(); err != nil {
				return Entry{}, err
			}
		}
	}
	n, err := binary.ReadUvarint(p.br)
	if err != nil {
		return Entry{}, p.readErr(err)
	}
	e.Size = int64(n)
	filtered := e.Kind == KindFiltered
	if filtered {
		e.Kind = KindBlob // what the caller gets, once unfiltered
	}
	if n > 1<<50 || e.Size > p.maxSize(e) || filtered && e.Size > MaxFilterFile {
		return Entry{}, fmt.Errorf("entry %s of %d bytes is larger than it may be: %w", e.Digest, n, ErrMalformed)
	}
	p.cur = &io.LimitedReader{R: p.br, N: e.Size}
	e.Body = entryBody{p}
	if filtered {
		data := make([]byte, e.Size)
		if _, err := io.ReadFull(e.Body, data); err != nil {
			return Entry{}, err
		}
		UnfilterX86(data)
		e.Body = bytes.NewReader(data)
	}
	return e, nil
}

// entryBody reads the current entry and tells a cut stream from its end.
type entryBody struct{ p *PackReader }

func (b entryBody) Read(buf []byte) (int, error) {
	cur := b.p.cur
	if cur == nil {
		return 0, io.EOF
	}
	n, err := cur.Read(buf)
	if err == io.EOF && cur.N > 0 || err != nil && err != io.EOF {
		return n, b.p.readErr(err)
	}
	return n, err
}

func (p *PackReader) digest() (string, error) {
	var raw [sha256.Size]byte
	if _, err := io.ReadFull(p.br, raw[:]); err != nil {
		return "", p.readErr(err)
	}
	return hex.EncodeToString(raw[:]), nil
}

// readErr turns the end of the decompressed data into ErrTruncated and
// a corrupt frame into ErrMalformed.
func (p *PackReader) readErr(err error) error {
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return ErrTruncated
	case errors.Is(err, zstd.ErrMagicMismatch), errors.Is(err, zstd.ErrWindowSizeExceeded),
		errors.Is(err, zstd.ErrCRCMismatch), errors.Is(err, zstd.ErrReservedBlockType),
		errors.Is(err, zstd.ErrBlockTooSmall), errors.Is(err, zstd.ErrFrameSizeMismatch),
		errors.Is(err, zstd.ErrWindowSizeTooSmall), errors.Is(err, zstd.ErrDecoderSizeExceeded),
		errors.Is(err, zstd.ErrUnknownDictionary), errors.Is(err, zstd.ErrFrameSizeExceeded),
		errors.Is(err, zstd.ErrCompressedSizeTooBig):
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return err
}

// Close releases the decoder.
func (p *PackReader) Close() { p.zr.Close() }
