package layertool

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestPaxRecordLength(t *testing.T) {
	for n := 80; n < 120; n++ { // across the 99/100 length boundary
		rec := paxRecord("k", strings.Repeat("v", n))
		var size int
		if _, err := fmt.Sscan(rec, &size); err != nil || size != len(rec) {
			t.Errorf("record %q: length field %d, record is %d bytes", rec[:8], size, len(rec))
		}
	}
}

// TestSparseEntryReadBack writes a sparse file as a GNU sparse entry and
// reads it back with archive/tar.
func TestSparseEntryReadBack(t *testing.T) {
	p := filepath.Join(t.TempDir(), "sparse")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const size = 10 << 20
	if _, err := f.WriteAt([]byte("head"), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("middle"), 5<<20); err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	segs := dataSegments(int(f.Fd()), size)
	var data int64
	for _, s := range segs {
		data += s.len
	}
	if data >= size {
		t.Skipf("the filesystem of %s keeps no holes", p)
	}
	var buf bytes.Buffer
	tw := newTarWriter(&buf)
	mtime := time.Unix(1234567890, 123456789)
	long := strings.Repeat("d", 150) + "/é-sparse"
	h := &tar.Header{Name: long, Mode: 0o640, Uid: 1 << 22, Gid: 5, Size: size, ModTime: mtime, Format: tar.FormatPAX,
		PAXRecords: map[string]string{"SCHILY.xattr.user.a": "b\x00c"}}
	if err := tw.writeSparse(h, segs, int(f.Fd())); err != nil {
		t.Fatal(err)
	}
	if err := tw.tw.WriteHeader(&tar.Header{Name: "after", Typeflag: tar.TypeReg, Size: 2, Mode: 0o644}); err != nil {
		t.Fatal(err)
	}
	tw.tw.Write([]byte("ok"))
	if err := tw.tw.Close(); err != nil {
		t.Fatal(err)
	}
	if buf.Len() > 64<<10 {
		t.Errorf("tar is %d bytes for %d bytes of data", buf.Len(), data)
	}
	tr := tar.NewReader(&buf)
	got, err := tr.Next()
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != long || got.Size != size || got.Mode != 0o640 || got.Uid != 1<<22 || got.Gid != 5 || !got.ModTime.Equal(mtime) || got.PAXRecords["SCHILY.xattr.user.a"] != "b\x00c" {
		t.Errorf("header read back: %+v", got)
	}
	b, err := io.ReadAll(tr)
	if err != nil {
		t.Fatal(err)
	}
	want := make([]byte, size)
	copy(want, "head")
	copy(want[5<<20:], "middle")
	if !bytes.Equal(b, want) {
		t.Errorf("content read back differs")
	}
	if next, err := tr.Next(); err != nil || next.Name != "after" {
		t.Errorf("the entry after the sparse one: %v, %v", next, err)
	}
}
