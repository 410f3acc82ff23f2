package main

// The API datastores register their --datastore schemes ("kubernetes", "etcd:URL") in init.
import (
	_ "github.com/felis-dev/felis/datastore/etcd"
	_ "github.com/felis-dev/felis/datastore/kubernetes"
)
