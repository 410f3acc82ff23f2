// Package track turns the resource events of an API datastore (Kubernetes informers, an etcd
// watch) into store writes: it remembers which model objects each API resource produced, keeps
// a resource's last valid objects while a newer version is invalid, and reports the problems.
package track
