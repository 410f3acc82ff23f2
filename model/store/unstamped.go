package store

import (
	"reflect"

	"github.com/felis-dev/felis/model"
)

// Unstamped returns o, or a shallow copy without revision when o has been written to a store
// before: Write refuses to re-stamp an object that old views may still hold (ErrStale).
// Shallow is enough, as stored objects are never modified.
func Unstamped(o model.Object) model.Object {
	if o.GetMeta().Revision == 0 {
		return o
	}
	v := reflect.ValueOf(o)
	if v.Kind() != reflect.Pointer {
		return o
	}
	c := reflect.New(v.Elem().Type())
	c.Elem().Set(v.Elem())
	n := c.Interface().(model.Object)
	n.GetMeta().Revision = 0
	return n
}
