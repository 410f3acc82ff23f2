// Package convert decodes Calico v3 and Kubernetes API objects (as JSON) into felis's model
// types, validating them the way Calico's validator does and converting them exactly as
// Calico's Kubernetes backend and Felix's update processors do. It is pure: no I/O, no globals.
package convert
