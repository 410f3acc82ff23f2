package convert

import "testing"

// benchmarkDecode decodes one document repeatedly and reports objects per second.
func benchmarkDecode(b *testing.B, apiVersion, kind, js string) {
	data := []byte(js)
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if r := Decode(apiVersion, kind, data); len(r.Errors) > 0 {
			b.Fatal(r.Errors)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "objects/s")
}

func BenchmarkDecodePod(b *testing.B) { benchmarkDecode(b, "v1", "Pod", podJSON) }

func BenchmarkDecodeGlobalNetworkPolicy(b *testing.B) {
	benchmarkDecode(b, fuzzKinds[0][0], fuzzKinds[0][1], fuzzSeeds[0])
}

func BenchmarkDecodeK8sNetworkPolicy(b *testing.B) {
	benchmarkDecode(b, fuzzKinds[19][0], fuzzKinds[19][1], fuzzSeeds[19])
}
