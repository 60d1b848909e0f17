// Command etcd is the etcd server built from go.etcd.io/etcd/server/v3, whose etcdmain
// package is the entry point of the upstream etcd binary.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
