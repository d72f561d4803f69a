package layertool

// Sparse files in a tar. archive/tar reads the PAX "GNU sparse 1.0" form
// (as GNU tar, libarchive and every Go tool built on archive/tar do) but
// cannot write it (golang.org/issue/22735), so this file writes those
// entries' headers itself, between entries archive/tar writes.
//
// An entry is: a PAX extended header (typeflag 'x') whose records name the
// file (GNU.sparse.name) and its size (GNU.sparse.realsize); a ustar header
// with a stand-in name; then the sparse map (number of data segments, then
// offset and length of each, in decimal lines, padded to a block) and the
// data segments back to back.

import (
	"archive/tar"
	"fmt"
	"io"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

const blockSize = 512

// segment is a run of data in a sparse file.
type segment struct{ off, len int64 }

// dataSegments lists the data runs of the first size bytes of fd (SEEK_DATA
// and SEEK_HOLE), or one run covering everything where the filesystem
// cannot tell.
func dataSegments(fd int, size int64) []segment {
	var segs []segment
	for off := int64(0); off < size; {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if err == unix.ENXIO {
			break
		}
		if err != nil {
			return []segment{{0, size}}
		}
		if data >= size {
			break
		}
		end, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil || end > size {
			end = size
		}
		segs = append(segs, segment{data, end - data})
		off = end
	}
	return segs
}

// tarWriter is archive/tar's writer plus sparse entries.
type tarWriter struct {
	w  io.Writer
	tw *tar.Writer
}

func newTarWriter(w io.Writer) *tarWriter { return &tarWriter{w: w, tw: tar.NewWriter(w)} }

// writeSparse writes regular file h (h.Size is its apparent size) whose
// data are segs, read from fd.
func (t *tarWriter) writeSparse(h *tar.Header, segs []segment, fd int) error {
	if err := t.tw.Flush(); err != nil { // pad the previous entry
		return err
	}
	var smap strings.Builder
	n := len(segs)
	last := int64(0)
	if n > 0 {
		last = segs[n-1].off + segs[n-1].len
	}
	if last < h.Size {
		n++ // a last, empty segment gives the size
	}
	smap.WriteString(strconv.Itoa(n) + "\n")
	var data int64
	for _, s := range segs {
		fmt.Fprintf(&smap, "%d\n%d\n", s.off, s.len)
		data += s.len
	}
	if last < h.Size {
		fmt.Fprintf(&smap, "%d\n0\n", h.Size)
	}
	mapBytes := pad([]byte(smap.String()))
	stored := int64(len(mapBytes)) + data

	recs := map[string]string{}
	for k, v := range h.PAXRecords {
		recs[k] = v
	}
	recs["GNU.sparse.major"] = "1"
	recs["GNU.sparse.minor"] = "0"
	recs["GNU.sparse.name"] = h.Name
	recs["GNU.sparse.realsize"] = strconv.FormatInt(h.Size, 10)
	mtime := h.ModTime.Unix()
	if h.ModTime.Nanosecond() != 0 || mtime < 0 || mtime > 077777777777 {
		recs["mtime"] = paxTime(h.ModTime)
		mtime = max(min(mtime, 077777777777), 0)
	}
	uid, gid, size := int64(h.Uid), int64(h.Gid), stored
	if uid > 07777777 {
		recs["uid"], uid = strconv.FormatInt(uid, 10), 0
	}
	if gid > 07777777 {
		recs["gid"], gid = strconv.FormatInt(gid, 10), 0
	}
	if size > 077777777777 {
		recs["size"], size = strconv.FormatInt(size, 10), 0
	}
	keys := make([]string, 0, len(recs))
	for k := range recs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var body strings.Builder
	for _, k := range keys {
		body.WriteString(paxRecord(k, recs[k]))
	}
	dir, base := path.Split(h.Name)
	xhdr := ustar(path.Join(dir, "PaxHeaders.0", base), 0, 0, 0, int64(body.Len()), 0, tar.TypeXHeader)
	fhdr := ustar(path.Join(dir, "GNUSparseFile.0", base), h.Mode, uid, gid, size, mtime, tar.TypeReg)
	for _, b := range [][]byte{xhdr, pad([]byte(body.String())), fhdr, mapBytes} {
		if _, err := t.w.Write(b); err != nil {
			return err
		}
	}
	buf := make([]byte, 1<<20)
	for _, s := range segs {
		for off := s.off; off < s.off+s.len; {
			chunk := buf[:min(int64(len(buf)), s.off+s.len-off)]
			r, err := unix.Pread(fd, chunk, off)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				return fmt.Errorf("read: %w", err)
			}
			if r == 0 {
				return fmt.Errorf("read: %w (file shrank while exported)", io.ErrUnexpectedEOF)
			}
			if _, err := t.w.Write(chunk[:r]); err != nil {
				return err
			}
			off += int64(r)
		}
	}
	if rem := data % blockSize; rem != 0 {
		_, err := t.w.Write(make([]byte, blockSize-rem))
		return err
	}
	return nil
}

// paxTime formats t as a PAX time, as archive/tar does: seconds, and the
// fraction without trailing zeros.
func paxTime(t time.Time) string {
	secs, nsecs := t.Unix(), int64(t.Nanosecond())
	if nsecs == 0 {
		return strconv.FormatInt(secs, 10)
	}
	sign := ""
	if secs < 0 {
		sign, secs, nsecs = "-", -(secs + 1), 1e9-nsecs
	}
	return strings.TrimRight(fmt.Sprintf("%s%d.%09d", sign, secs, nsecs), "0")
}

// paxRecord formats one PAX record: "LEN KEY=VALUE\n", LEN counting itself.
func paxRecord(k, v string) string {
	size := len(k) + len(v) + 3
	size += len(strconv.Itoa(size))
	rec := strconv.Itoa(size) + " " + k + "=" + v + "\n"
	if len(rec) != size { // the length grew a digit
		rec = strconv.Itoa(len(rec)) + " " + k + "=" + v + "\n"
	}
	return rec
}

// ustar formats a POSIX ustar header block. name is cut to what fits, in
// ASCII; the PAX records carry the real one.
func ustar(name string, mode, uid, gid, size, mtime int64, flag byte) []byte {
	b := make([]byte, blockSize)
	var ascii strings.Builder
	for _, r := range name {
		if r < 0x80 && r != 0 {
			ascii.WriteRune(r)
		}
	}
	name = ascii.String()
	if len(name) > 100 {
		name = name[:100]
	}
	copy(b[0:100], name)
	octal(b[100:108], mode)
	octal(b[108:116], uid)
	octal(b[116:124], gid)
	octal(b[124:136], size)
	octal(b[136:148], mtime)
	b[156] = flag
	copy(b[257:263], "ustar\x00")
	copy(b[263:265], "00")
	octal(b[329:337], 0)
	octal(b[337:345], 0)
	copy(b[148:156], "        ")
	sum := int64(0)
	for _, c := range b {
		sum += int64(c)
	}
	octal(b[148:155], sum)
	b[155] = ' '
	return b
}

// octal writes x zero-padded into field, ending in NUL.
func octal(field []byte, x int64) {
	s := strconv.FormatInt(x, 8)
	if n := len(field) - 1 - len(s); n > 0 {
		s = strings.Repeat("0", n) + s
	}
	copy(field, s)
	field[len(field)-1] = 0
}

// pad extends b with zeros to a whole number of blocks.
func pad(b []byte) []byte {
	if rem := len(b) % blockSize; rem != 0 {
		b = append(b, make([]byte, blockSize-rem)...)
	}
	return b
}
