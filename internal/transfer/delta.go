package transfer

import (
	"fmt"
	"math/bits"

	"github.com/klauspost/compress/zstd"
)

// MaxDeltaFile bounds the base and the target of a delta: both are held
// in memory while it is made or applied.
const MaxDeltaFile = 96 << 20

// deltaDictID names the dictionary of a delta frame: always the base.
const deltaDictID = 1

// deltaWindow is the window a delta of target against base needs: the
// base precedes the target in the history, so matches reach back over
// both.
func deltaWindow(base, target int) int {
	n := base + target
	w := zstd.MinWindowSize
	if n > w {
		w = 1 << bits.Len(uint(n-1))
	}
	return min(w, MaxDeltaWindow)
}

// MakeDelta returns a zstd frame of target compressed with base as its raw
// dictionary, the same idea as `zstd --patch-from=base`: unchanged runs
// of the old file cost a few bytes each.
func MakeDelta(base, target []byte) ([]byte, error) {
	if len(base) > MaxDeltaFile || len(target) > MaxDeltaFile {
		return nil, fmt.Errorf("delta: files over %d bytes", MaxDeltaFile)
	}
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedBestCompression),
		zstd.WithEncoderDictRaw(deltaDictID, base), zstd.WithWindowSize(deltaWindow(len(base), len(target))),
		zstd.WithEncoderConcurrency(1), zstd.WithEncoderCRC(true))
	if err != nil {
		return nil, fmt.Errorf("delta: %w", err)
	}
	defer enc.Close()
	return enc.EncodeAll(target, make([]byte, 0, len(target)/8)), nil
}

// ApplyDelta returns the target of delta applied to base. It refuses a
// result over maxSize bytes; the caller checks the result's digest.
func ApplyDelta(base, delta []byte, maxSize int64) ([]byte, error) {
	dec, err := zstd.NewReader(nil, zstd.WithDecoderDictRaw(deltaDictID, base), zstd.WithDecoderConcurrency(1),
		zstd.WithDecoderMaxWindow(MaxDeltaWindow), zstd.WithDecoderMaxMemory(uint64(max(maxSize, 1))))
	if err != nil {
		return nil, fmt.Errorf("apply delta: %w", err)
	}
	defer dec.Close()
	out, err := dec.DecodeAll(delta, nil)
	if err != nil {
		return nil, fmt.Errorf("apply delta: %v: %w", err, ErrMalformed)
	}
	if int64(len(out)) > maxSize {
		return nil, fmt.Errorf("apply delta: result over %d bytes: %w", maxSize, ErrMalformed)
	}
	return out, nil
}
