package layer

// Metacopy marks an upper regular file whose data is still in a lower layer:
// a metadata-only copy-up (chmod, chown, utimes, xattrs of a lower file).
// The format is kernel overlayfs's (-o metacopy=on): an empty value, the
// upper file sparse at the lower file's size; an overlay.redirect on the
// file, if any, names the lower data file by absolute path.
const Metacopy = "metacopy"
