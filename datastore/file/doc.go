// Package file is the file datastore: it reads Calico and Kubernetes resources from a YAML or
// JSON file or a directory tree (as kubectl and calicoctl print them), loads the valid ones into
// the store with their file and line, reports the invalid ones, and follows edits with fsnotify.
package file
