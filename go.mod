module github.com/unionmount/unionmount

go 1.26.8

require (
	github.com/hanwen/go-fuse/v2 v2.12.1
	github.com/moby/go-archive v0.3.3
	golang.org/x/sys v0.49.0
)

require (
	github.com/containerd/log v0.1.0 // indirect
	github.com/klauspost/compress v1.18.7 // indirect
	github.com/moby/patternmatcher v0.6.1 // indirect
	github.com/moby/sys/sequential v0.7.0 // indirect
	github.com/moby/sys/user v0.4.1 // indirect
	github.com/moby/sys/userns v0.1.0 // indirect
	github.com/sirupsen/logrus v1.9.4 // indirect
)

replace github.com/hanwen/go-fuse/v2 => ./third_party/go-fuse
