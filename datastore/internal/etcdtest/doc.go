// Package etcdtest runs an embedded etcd server for integration tests: on fixed free ports
// of 127.0.0.1 with a data directory the test owns, so a test can stop and restart it (on the
// same or another client port) and watch clients see a real outage. Only tests import it.
package etcdtest
