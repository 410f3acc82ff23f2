package convert

import (
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestDecodeDispatch(t *testing.T) {
	tests := []struct {
		apiVersion, kind, json string
		wantResource           string
		wantSkipped            bool
		wantObjects            int
	}{
		{"apps/v1", "Deployment", `{"metadata":{"name":"d","namespace":"x"}}`, "Deployment x/d", true, 0},
		{"projectcalico.org/v3", "BGPPeer", `{"metadata":{"name":"p"}}`, "BGPPeer p", true, 0},
		{"v1", "ConfigMap", `{"metadata":{"name":"c","namespace":"n"}}`, "ConfigMap n/c", true, 0},
		{"projectcalico.org/v1", "NetworkPolicy", `{"metadata":{"name":"old"}}`, "NetworkPolicy old", true, 0},
		{"crd.projectcalico.org/v1", "IPPool", `{"metadata":{"name":"crd"}}`, "IPPool crd", true, 0},
		{"v1", "Namespace", `{"metadata":{"name":"ns"}}`, "Namespace ns", false, 1},
		{"networking.k8s.io/v1", "NetworkPolicy", `{"metadata":{"name":"np","namespace":"ns"},"spec":{"podSelector":{}}}`, "NetworkPolicy ns/np", false, 1},
		{"projectcalico.org/v3", "NetworkPolicy", `{"metadata":{"name":"np","namespace":"ns"},"spec":{}}`, "NetworkPolicy ns/np", false, 1},
		{"discovery.k8s.io/v1", "EndpointSlice", `{"metadata":{"name":"s","namespace":"ns"},"addressType":"IPv4"}`, "EndpointSlice ns/s", false, 1},
		{"crd.projectcalico.org/v1", "IPAMBlock", `{"metadata":{"name":"b"},"spec":{"cidr":"10.0.0.0/26"}}`, "IPAMBlock b", false, 1},
		{"apps/v1", "Deployment", `not json`, "Deployment ", true, 0},
	}
	for _, tc := range tests {
		t.Run(tc.apiVersion+" "+tc.kind, func(t *testing.T) {
			r := Decode(tc.apiVersion, tc.kind, []byte(tc.json))
			if r.Resource != tc.wantResource || r.Skipped != tc.wantSkipped || len(r.Objects) != tc.wantObjects || len(r.Errors) != 0 {
				t.Errorf("got resource=%q skipped=%v objects=%d errors=%v; want %q %v %d none",
					r.Resource, r.Skipped, len(r.Objects), r.Errors, tc.wantResource, tc.wantSkipped, tc.wantObjects)
			}
		})
	}
}

func TestDecodeErrorsNameTheField(t *testing.T) {
	tests := []struct {
		name, apiVersion, kind, json string
		want                         []FieldError
	}{
		{"bad port string", "projectcalico.org/v3", "GlobalNetworkPolicy",
			`{"metadata":{"name":"p"},"spec":{"ingress":[{"action":"Allow"},{"action":"Allow","protocol":"TCP","destination":{"ports":[80,"bad port!"]}}]}}`,
			[]FieldError{{"spec.ingress[1].destination.ports[1]", "invalid name for named port (bad port!)"}}},
		{"reversed range", "projectcalico.org/v3", "NetworkPolicy",
			`{"metadata":{"name":"p","namespace":"n"},"spec":{"egress":[{"action":"Allow","protocol":"TCP","destination":{"ports":["90:80"]}}]}}`,
			[]FieldError{{"spec.egress[0].destination.ports[0]", "minimum port number (90) is greater than maximum port number (80) in port range"}}},
		{"port out of range", "projectcalico.org/v3", "GlobalNetworkPolicy",
			`{"metadata":{"name":"p"},"spec":{"ingress":[{"action":"Allow","protocol":"TCP","source":{"ports":[70000]}}]}}`,
			[]FieldError{{"spec.ingress[0].source.ports[0]", "cannot unmarshal number 70000 into Go value of type uint16"}}},
		{"protocol number too big", "projectcalico.org/v3", "GlobalNetworkPolicy",
			`{"metadata":{"name":"p"},"spec":{"ingress":[{"action":"Allow","protocol":300}]}}`,
			[]FieldError{{"spec.ingress[0].protocol", "cannot unmarshal number 300 into Go value of type uint8"}}},
		{"unknown field", "projectcalico.org/v3", "GlobalNetworkPolicy",
			`{"metadata":{"name":"p"},"spec":{"ingress":[{"action":"Allow","source":{"selecter":"a == 'b'"}}]}}`,
			[]FieldError{{"spec.ingress[0].source.selecter", "unknown field; expected one of: namespaceSelector, nets, notNets, notPorts, notSelector, ports, selector, serviceAccounts, services"}}},
		{"wrong type", "projectcalico.org/v3", "Tier",
			`{"metadata":{"name":"t"},"spec":{"order":"first"}}`,
			[]FieldError{{"spec.order", `expected a number, got string "first"`}}},
		{"list expected", "v1", "Pod",
			`{"metadata":{"name":"p","namespace":"n"},"spec":{"containers":{"name":"c"}}}`,
			[]FieldError{{"spec.containers", "expected a list, got an object"}}},
		{"not JSON", "v1", "Namespace", `{"metadata":`,
			[]FieldError{{"", "not valid JSON: unexpected end of JSON input"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := Decode(tc.apiVersion, tc.kind, []byte(tc.json))
			if len(r.Objects) != 0 {
				t.Errorf("invalid resource produced objects: %v", r.Objects)
			}
			if d := cmp.Diff(tc.want, r.Errors); d != "" {
				t.Errorf("errors (-want +got):\n%s", d)
			}
		})
	}
}

func TestStrictDecodingIgnoresTopLevelStatus(t *testing.T) {
	r := decodeOK(t, "projectcalico.org/v3", "IPPool", `{"apiVersion":"projectcalico.org/v3","kind":"IPPool","metadata":{"name":"p","resourceVersion":"12","uid":"u","creationTimestamp":"2026-01-01T00:00:00Z"},"spec":{"cidr":"10.0.0.0/16"},"status":{"conditions":[]}}`)
	if len(r.Objects) != 1 {
		t.Fatalf("got %d objects", len(r.Objects))
	}
	bad := Decode("projectcalico.org/v3", "IPPool", []byte(`{"metadata":{"name":"p"},"spec":{"cidr":"10.0.0.0/16","status":1}}`))
	if !slices.Equal(fieldsOf(bad.Errors), []string{"spec.status"}) {
		t.Errorf("status inside spec must stay an error, got %v", bad.Errors)
	}
}

func TestUnknownFieldDoesNotHideOtherErrors(t *testing.T) {
	r := Decode("projectcalico.org/v3", "GlobalNetworkPolicy", []byte(`{"metadata":{"name":"p"},"spec":{"selectr":"a == 'b'","ingress":[{"action":"Alow"}]}}`))
	if want := []string{"spec.selectr", "spec.ingress[0].action"}; !slices.Equal(fieldsOf(r.Errors), want) || len(r.Objects) != 0 {
		t.Errorf("got %v, want errors at %v and no objects", r.Errors, want)
	}
}

func TestResultOfInvalidResourceHasNoObjects(t *testing.T) {
	r := Decode("projectcalico.org/v3", "GlobalNetworkPolicy", []byte(`{"metadata":{"name":"p"},"spec":{"selector":"a ==","ingress":[{"action":"Allow"}]}}`))
	if len(r.Errors) == 0 || len(r.Objects) != 0 {
		t.Fatalf("want errors and no objects, got %v / %v", r.Errors, r.Objects)
	}
	if r.Errors[0].Field != "spec.selector" || !strings.Contains(r.Errors[0].Reason, "invalid selector") {
		t.Errorf("got %v", r.Errors[0])
	}
	if got := r.Errors[0].Error(); !strings.HasPrefix(got, "spec.selector: invalid selector") {
		t.Errorf("Error() = %q", got)
	}
}

func TestFieldErrorsAreSortedStable(t *testing.T) {
	// Same input twice gives the same error list (map iteration must not leak into output).
	js := `{"metadata":{"name":"p"},"spec":{"cidr":"10.0.0.0/16","zzz":1,"aaa":2,"mmm":3}}`
	a := Decode("projectcalico.org/v3", "IPPool", []byte(js)).Errors
	for range 20 {
		b := Decode("projectcalico.org/v3", "IPPool", []byte(js)).Errors
		if !slices.Equal(fieldsOf(a), fieldsOf(b)) {
			t.Fatalf("unstable error order: %v vs %v", fieldsOf(a), fieldsOf(b))
		}
	}
	if want := []string{"spec.aaa", "spec.mmm", "spec.zzz"}; !slices.Equal(fieldsOf(a), want) {
		t.Errorf("got %v, want %v", fieldsOf(a), want)
	}
}
