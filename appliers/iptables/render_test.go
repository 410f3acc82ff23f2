package iptables

import (
	"os"
	"testing"
)

func TestRenderFixturePrint(t *testing.T) {
	rs, err := Render(fixtureSnapshot())
	if err != nil {
		t.Fatal(err)
	}
	if os.Getenv("PRINT") != "" {
		t.Log("\n" + rs.String())
	}
}
