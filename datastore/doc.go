// Package datastore opens the sources felis reads cluster state from (file, kubernetes,
// etcd). Each source decodes and validates resources, feeds batches into the store, and
// marks itself in sync once its initial state is loaded.
package datastore
