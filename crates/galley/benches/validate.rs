//! Validation throughput: load (parse + strict decode) and validate a generated
//! corpus of 10,000 mixed resources. Run with `cargo bench -p galley --bench validate`.
//! Target (issue 2): at least 20,000 resources/s on the 2-core CI machine.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use galley::CheckOptions;

const N: usize = 10_000;

/// Ten resource shapes, cycled, each with distinct names.
fn corpus(n: usize) -> String {
    let mut out = String::with_capacity(n * 600);
    for i in 0..n {
        let svc = format!("svc-{}", i / 10);
        let doc = match i % 10 {
            0 => format!(
                "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: vs-{i}, namespace: ns-{ns}}}\nspec:\n  hosts: [{svc}]\n  http:\n  - match:\n    - headers:\n        end-user: {{exact: jason}}\n      uri: {{prefix: /api}}\n    route:\n    - destination: {{host: {svc}, subset: v2}}\n    retries: {{attempts: 3, perTryTimeout: 2s, retryOn: 'gateway-error,connect-failure'}}\n    timeout: 10s\n  - route:\n    - destination: {{host: {svc}, subset: v1}}\n      weight: 75\n    - destination: {{host: {svc}, subset: v3}}\n      weight: 25\n",
                ns = i % 7
            ),
            1 => format!(
                "apiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\nmetadata: {{name: dr-{i}}}\nspec:\n  host: {svc}\n  trafficPolicy:\n    loadBalancer: {{simple: ROUND_ROBIN}}\n    connectionPool:\n      tcp: {{maxConnections: 100}}\n      http: {{http1MaxPendingRequests: 10, maxRequestsPerConnection: 10}}\n    outlierDetection: {{consecutive5xxErrors: 5, interval: 1s, baseEjectionTime: 30s}}\n  subsets:\n  - name: v1\n    labels: {{version: v1}}\n  - name: v2\n    labels: {{version: v2}}\n"
            ),
            2 => format!(
                "apiVersion: networking.istio.io/v1alpha3\nkind: Gateway\nmetadata: {{name: gw-{i}}}\nspec:\n  selector: {{istio: ingressgateway}}\n  servers:\n  - port: {{number: 80, name: http, protocol: HTTP}}\n    hosts: ['{svc}.example.com']\n"
            ),
            3 => format!(
                "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: se-{i}}}\nspec:\n  hosts: [api-{i}.example.com]\n  ports:\n  - {{number: 443, name: https, protocol: HTTPS}}\n  resolution: DNS\n  location: MESH_EXTERNAL\n"
            ),
            4 => format!(
                "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: ap-{i}, namespace: default}}\nspec:\n  selector:\n    matchLabels: {{app: {svc}}}\n  action: ALLOW\n  rules:\n  - from:\n    - source:\n        principals: [cluster.local/ns/default/sa/client-{i}]\n    to:\n    - operation:\n        methods: [GET, POST]\n        paths: [/api/*]\n    when:\n    - key: request.headers[x-tenant]\n      values: [a, b]\n"
            ),
            5 => format!(
                "apiVersion: security.istio.io/v1beta1\nkind: PeerAuthentication\nmetadata: {{name: pa-{i}, namespace: ns-{i}}}\nspec:\n  mtls: {{mode: STRICT}}\n"
            ),
            6 => format!(
                "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {{name: sc-{i}, namespace: ns-{i}}}\nspec:\n  egress:\n  - hosts: ['./*', 'istio-system/*']\n"
            ),
            7 => format!(
                "apiVersion: v1\nkind: Service\nmetadata: {{name: {svc}-{i}}}\nspec:\n  selector: {{app: {svc}}}\n  ports:\n  - {{port: 9080, name: http}}\n"
            ),
            8 => format!(
                "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{name: ra-{i}}}\nspec:\n  selector:\n    matchLabels: {{app: {svc}}}\n  jwtRules:\n  - issuer: https://issuer-{i}.example.com\n    jwksUri: https://issuer-{i}.example.com/jwks.json\n"
            ),
            _ => format!(
                "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {svc}-{i}}}\nspec:\n  selector:\n    matchLabels: {{app: {svc}}}\n  template:\n    metadata:\n      labels: {{app: {svc}, version: v1}}\n    spec:\n      containers: [{{name: app, image: example/app}}]\n"
            ),
        };
        out.push_str("---\n");
        out.push_str(&doc);
    }
    out
}

fn bench(c: &mut Criterion) {
    let text = corpus(N);
    // Sanity: the corpus is valid, so the benchmark measures the passing path.
    let outcome = galley::check_str(&text, "bench.yaml", &CheckOptions::default());
    assert_eq!(outcome.resources, N, "every generated resource decodes");
    assert!(
        !outcome.has_errors(),
        "{:?}",
        outcome.messages.iter().find(|m| m.is_error())
    );

    let mut g = c.benchmark_group("validate");
    g.throughput(Throughput::Elements(N as u64));
    g.sample_size(10);
    g.bench_function("load+validate 10k mixed", |b| {
        b.iter(|| galley::check_str(&text, "bench.yaml", &CheckOptions::default()))
    });
    g.bench_function("load+validate+analyze 10k mixed", |b| {
        let opts = CheckOptions {
            analyze: true,
            ..CheckOptions::default()
        };
        b.iter(|| galley::check_str(&text, "bench.yaml", &opts))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
