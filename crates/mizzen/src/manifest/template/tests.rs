use serde_json::json;

use super::*;

fn render(text: &str, values: Value) -> Result<String> {
    let templates = Templates::parse(&[("t.yaml", text)])?;
    let root = json!({"Values": values, "Release": {"Namespace": "istio-system"}});
    Ok(templates.render(&root)?.remove(0).1)
}

#[test]
fn fields_and_trim_markers() {
    let out = render(
        "a: {{ .Values.x }}\n{{- if .Values.y }}\nb: {{ .Values.y.z }}\n{{- end }}\nns: {{ .Release.Namespace }}\n",
        json!({"x": 3, "y": {"z": "q"}}),
    )
    .unwrap();
    assert_eq!(out, "a: 3\nb: q\nns: istio-system\n");
}

#[test]
fn else_if_chains_pick_the_first_true_branch() {
    let t = "{{ if eq .Values.k \"a\" }}A{{ else if eq .Values.k \"b\" }}B{{ else }}C{{ end }}";
    assert_eq!(render(t, json!({"k": "a"})).unwrap(), "A");
    assert_eq!(render(t, json!({"k": "b"})).unwrap(), "B");
    assert_eq!(render(t, json!({"k": "z"})).unwrap(), "C");
}

#[test]
fn empty_branches_are_kept_in_place() {
    let t = "{{ if .Values.a }}{{ else }}no{{ end }}";
    assert_eq!(render(t, json!({"a": true})).unwrap(), "");
    assert_eq!(render(t, json!({"a": false})).unwrap(), "no");
}

#[test]
fn range_binds_variables_and_root() {
    let t = "{{- range $i, $p := .Values.ports }}\n- {{ $i }}:{{ $p.port }}:{{ $.Values.n }}\n{{- end }}";
    let out = render(t, json!({"ports": [{"port": 80}, {"port": 443}], "n": "x"})).unwrap();
    assert_eq!(out, "\n- 0:80:x\n- 1:443:x");
    let dot = "{{ range .Values.l }}[{{ . }}]{{ else }}none{{ end }}";
    assert_eq!(render(dot, json!({"l": ["a", "b"]})).unwrap(), "[a][b]");
    assert_eq!(render(dot, json!({"l": []})).unwrap(), "none");
}

#[test]
fn include_to_yaml_and_nindent() {
    let t = "{{- define \"lbl\" -}}\napp: {{ .Values.app }}\n{{- end }}\nlabels:\n  {{- include \"lbl\" . | nindent 2 }}\nres:\n  {{- toYaml .Values.r | nindent 2 }}\n";
    let out = render(t, json!({"app": "pilot", "r": {"b": 1, "a": {"c": "2"}}})).unwrap();
    let parsed: Value = serde_saphyr::from_str(&out).unwrap();
    assert_eq!(
        parsed,
        json!({"labels": {"app": "pilot"}, "res": {"a": {"c": "2"}, "b": 1}})
    );
    assert!(
        out.find("a:").unwrap() < out.find("b:").unwrap(),
        "keys sorted: {out}"
    );
}

#[test]
fn functions_follow_go_truth() {
    let t = "{{ default \"d\" .Values.e }} {{ default \"d\" .Values.s }} {{ not .Values.e }} {{ and 1 0 }} {{ or 0 \"\" 2 }} {{ .Values.s | quote }} {{ ne 1 2 }}";
    assert_eq!(
        render(t, json!({"e": "", "s": "a\"b"})).unwrap(),
        "d a\"b true 0 2 \"a\\\"b\" true"
    );
}

#[test]
fn concat_joins_lists() {
    let t = "{{ range concat .Values.a .Values.b }}{{ . }}{{ end }}";
    assert_eq!(render(t, json!({"a": [1, 2], "b": [3]})).unwrap(), "123");
}

#[test]
fn comments_render_nothing() {
    let t = "a\n{{- /* gone */}}\nb{{/* also */}}\n";
    assert_eq!(render(t, json!({})).unwrap(), "a\nb\n");
}

#[test]
fn missing_values_print_empty() {
    assert_eq!(render("[{{ .Values.no.such }}]", json!({})).unwrap(), "[]");
}

#[test]
fn errors_name_the_template_and_line() {
    let e = render("a\nb\n{{ printf \"%s\" .Values.x }}", json!({})).unwrap_err();
    assert_eq!((e.template.as_str(), e.line), ("t.yaml", 3));
    assert!(e.message.contains("printf"), "{e}");
    let e = render("{{ if .Values.x }}\nno end", json!({})).unwrap_err();
    assert!(e.message.contains("no {{end}}"), "{e}");
    let e = render("{{ end }}", json!({})).unwrap_err();
    assert!(e.message.contains("unexpected"), "{e}");
    let e = render("x: {{ .Values.m }}", json!({"m": {"a": 1}})).unwrap_err();
    assert!(e.message.contains("toYaml"), "{e}");
    let e = render("{{ include \"none\" . }}", json!({})).unwrap_err();
    assert!(e.message.contains("none"), "{e}");
}

#[test]
fn a_template_including_itself_is_refused() {
    let e = render(
        "{{- define \"loop\" }}{{ include \"loop\" . }}{{ end }}{{ include \"loop\" . }}",
        json!({}),
    )
    .unwrap_err();
    assert!(e.message.contains("nested"), "{e}");
}
