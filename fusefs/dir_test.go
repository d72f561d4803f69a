package fusefs

import (
	"context"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// A seek to the offset of a name that is gone from the listing goes on
// with the name after it.
func TestSeekToRemovedName(t *testing.T) {
	d := &dirHandle{list: []fuse.DirEntry{{Name: "a", Off: 10}, {Name: "c", Off: 30}}, done: true}
	if en := d.Seekdir(context.Background(), 20); en != 0 {
		t.Fatal(en)
	}
	if de, _ := d.Readdirent(context.Background()); de == nil || de.Name != "c" {
		t.Fatalf("after the offset of a removed name: %v, want c", de)
	}
}
