package union

import (
	"errors"
	"fmt"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/unionmount/unionmount/internal/layer"
)

// A lower file with several names is one inode. Kernel overlayfs keeps it
// one after copy-up with its inode index (index=on); so do we: the first
// copy-up of any of its names puts the copy in workdir/unionmount-index,
// named by the lower origin, and links it into place; copying up another
// name only links the index entry; a name not yet copied up reads and stats
// through the index entry. The union's link count of such an inode (names
// shown, not links on disk) is kept in an xattr of the index entry.

// openIndex opens the index entry of key (the shared copy of a lower file
// with several names) for reading and writing; ok is false if there is none.
func (u *Union) openIndex(key string) (fd int, ok bool, err error) {
	if u.indexedKey(key) == "" {
		return -1, false, nil
	}
	fd, err = u.index.Open(key, unix.O_RDWR, 0)
	return fd, err == nil, err
}

// ThroughIndex reports whether e shows, through the index, a file that was
// copied up under another of its names: e itself is not in upper. The
// offline tools report and export such names as changed.
func (u *Union) ThroughIndex(e *Entry) bool {
	return !e.Upper && u.indexedKey(e.Index) != ""
}

// HasIndexed reports whether any inode is indexed, that is, whether some
// names may show a copy through the index (see ThroughIndex).
func (u *Union) HasIndexed() (bool, error) {
	if u.index == nil {
		return false, nil
	}
	ents, err := u.index.ReadDir("")
	return len(ents) > 0, err
}

// indexBeforeRemove copies up a name of a lower file with several names that
// is about to disappear (unlink, rename over it), as kernel overlayfs does,
// so that the index holds the inode and counts the names left.
// Preconditions: u.renameMu is held.
func (u *Union) indexBeforeRemove(e *Entry) error {
	if e.Index == "" || e.Upper || u.indexedKey(e.Index) != "" {
		return nil
	}
	_, err := u.copyUpHeld(e, copyReq{size: All})
	return err
}

// indexKey names the index entry of lower object st.
func indexKey(st *unix.Stat_t) string { return string(originValue(st)) }

// indexedKey returns key if the index has an entry for it, else "".
func (u *Union) indexedKey(key string) string {
	if u.index == nil || key == "" {
		return ""
	}
	if ok, _ := u.index.Exists(key); ok {
		return key
	}
	return ""
}

// indexNlink is the union link count of index entry key.
func (u *Union) indexNlink(key string, fallback uint64) uint64 {
	if u.index == nil {
		return fallback
	}
	v, err := u.index.GetxattrString(key, u.format.Name(layer.Nlink))
	if err != nil || v == "" {
		return fallback
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return fallback
	}
	return n
}

// layerNlink is the union link count that lower file p of layer l recorded
// when its layer was the upper of a union (an upper rotated into the
// lowers, as image builds do). Its links on disk count one more, in that
// union's workdir index, which no longer shows; the recorded count may
// count names that stayed in the layers below, which no longer share the
// inode. Lookup shows the smaller of the two, as kernel overlayfs and ext4
// agree on in the cases the differential tester finds.
func (u *Union) layerNlink(l *layer.Layer, p string) (uint64, bool) {
	v, err := l.GetxattrString(p, u.format.Name(layer.Nlink))
	if err != nil || v == "" {
		return 0, false
	}
	n, err := strconv.ParseUint(v, 10, 64)
	return n, err == nil && n > 0
}

// lowerNlink is the link count lower file p of layer l, with onDisk links,
// shows: fewer if it recorded a union count when its layer was an upper
// (see layerNlink).
func (u *Union) lowerNlink(l *layer.Layer, p string, onDisk uint64) uint64 {
	if n, ok := u.layerNlink(l, p); ok && n < onDisk {
		return n
	}
	return onDisk
}

// addNlink changes the union link count of index entry key by delta; an
// inode with no index entry (an upper file's own links) counts itself.
func (u *Union) addNlink(key string, delta int64) error {
	if u.index == nil {
		return nil
	}
	unlock := u.copyLocks.lock("\x00index/" + key)
	defer unlock()
	st, err := u.index.Lstat(key)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return err
	}
	n := int64(u.indexNlink(key, st.Nlink-1)) + delta
	if n < 0 {
		n = 0
	}
	return u.index.Setxattr(key, u.format.Name(layer.Nlink), []byte(strconv.FormatInt(n, 10)), 0)
}

// copyUpIndexed copies up one name of a lower file with several names:
// by linking its index entry if there is one, else by making the entry from
// the lower file.
func (u *Union) copyUpIndexed(e *Entry, size int64) error {
	key := e.Index
	unlock := u.copyLocks.lock("\x00index/" + key)
	defer unlock()
	if u.indexedKey(key) != "" {
		parent := parentOf(e.Path)
		pst, perr := u.upper.Lstat(parent)
		if err := u.index.Link(key, u.upper, e.Path); err != nil {
			return err
		}
		if perr == nil {
			_ = u.upper.Lutimes(parent, []unix.Timespec{pst.Atim, pst.Mtim})
		}
		e.Index = key
		return nil
	}
	if len(e.Lower) == 0 {
		return fmt.Errorf("no lower object: %w", unix.EIO)
	}
	src := e.Lower[0]
	lst, err := src.Layer.Lstat(src.Path)
	if err != nil {
		return err
	}
	st := &lst
	tmp, err := u.buildCopy(src, st, size, e.Data)
	if err != nil {
		return err
	}
	nl := []byte(strconv.FormatUint(u.lowerNlink(src.Layer, src.Path, st.Nlink), 10))
	if err := u.work.Setxattr(tmp, u.format.Name(layer.Nlink), nl, 0); err != nil {
		_ = u.work.RemoveAll(tmp)
		return err
	}
	if err := u.work.Link(tmp, u.index, key); err != nil {
		_ = u.work.RemoveAll(tmp)
		return err
	}
	// From here the index entry holds the complete copy: a crash before the
	// rename leaves a name still lower, reading through the index.
	if err := u.placeCopy(tmp, e.Path, st, nil); err != nil {
		return err
	}
	e.Index = key
	return nil
}
