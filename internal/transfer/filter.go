package transfer

import "encoding/binary"

// MaxFilterFile bounds the files a pack sends through the x86 filter:
// both ends hold such a file whole in memory. Larger ones travel
// unfiltered.
const MaxFilterFile = 32 << 20

// IsX86ELF reports whether head, the first bytes of a file, starts an
// x86-64 ELF object: the files the x86 filter is for.
func IsX86ELF(head []byte) bool {
	// e_ident[EI_CLASS] = 2 (64-bit), e_machine (bytes 18-19, little
	// endian here) = 62 (EM_X86_64).
	return len(head) >= 20 && string(head[:4]) == "\x7fELF" && head[4] == 2 && head[5] == 1 &&
		head[18] == 62 && head[19] == 0
}

// FilterX86 rewrites the 32-bit relative addresses of x86-64 machine code
// in b, in place, as addresses from the start of b, so that the many
// calls of one function, and the many loads of one variable, carry the
// same bytes and compress as repeats. It is the idea of the x86 "branch
// converter" filters of other compressors: calls and jumps (E8, E9
// rel32) and RIP-relative MOV, LEA and stores (8B, 8D, 89 with ModRM
// mod=00 rm=101, disp32).
//
// Only displacements within ±16 MiB (top byte 00 or FF) are rewritten,
// modulo 2^25, so a rewritten one keeps a top byte of 00 or FF and any
// other four bytes stay as they are: on data that is not code the filter
// changes little. UnfilterX86 undoes it exactly, for any input: the scan
// decides where to look only on bytes it never rewrites.
func FilterX86(b []byte) { x86(b, true) }

// UnfilterX86 undoes FilterX86 in place.
func UnfilterX86(b []byte) { x86(b, false) }

func x86(b []byte, encode bool) {
	for i := 0; i+6 <= len(b); {
		switch c := b[i]; {
		case c == 0xE8 || c == 0xE9:
			x86Addr(b[i+1:i+5], uint32(i+5), encode)
			i += 5
		case (c == 0x8B || c == 0x8D || c == 0x89) && b[i+1]&0xC7 == 0x05:
			x86Addr(b[i+2:i+6], uint32(i+6), encode)
			i += 6
		default:
			i++
		}
	}
}

// x86Addr turns the relative address in p (little endian) into one from
// the start (encode) or back, when its top byte is 00 or FF.
func x86Addr(p []byte, pos uint32, encode bool) {
	v := binary.LittleEndian.Uint32(p)
	if top := v >> 24; top != 0 && top != 0xFF {
		return
	}
	if encode {
		v += pos
	} else {
		v -= pos
	}
	// Sign-extend from 25 bits: the top byte is 00 or FF again.
	v &= 1<<25 - 1
	if v&(1<<24) != 0 {
		v |= 0xFF000000
	}
	binary.LittleEndian.PutUint32(p, v)
}
