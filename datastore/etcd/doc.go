// Package etcd is the etcd datastore (--datastore etcd:URL): it reads Calico's etcdv3 layout
// (v3 resources under /calico/resources/v3/projectcalico.org/, IPAM blocks under
// /calico/ipam/v2/assignment/) into the store and follows it with a resuming watch.
package etcd
