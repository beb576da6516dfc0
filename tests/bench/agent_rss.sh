#!/usr/bin/env bash
# Idle memory of a real flotilla-agent (release binary) on a cluster it manages: the
# Kubernetes API emulator, a real hub, one bundle of 60 objects (50 ConfigMaps, 5 Deployments,
# 5 Services), so three watched types. Prints the agent's VmRSS after 20 s idle, its peak and
# the binary's size. Build first:
#   cargo build --release --bin flotilla --bin flotilla-agent
#   cargo build --release -p flotilla-tests --example kube-emulator
# then run from the repository root: tests/bench/agent_rss.sh
# Uses ports 18443 and 19090 on 127.0.0.1.
set -euo pipefail
T=${T:-$(pwd)/target/release}
W=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT
cd "$W"
# A repository with one bundle: 5 Deployments, 50 ConfigMaps, 5 Services.
git init -q -b main repo
mkdir -p repo/app
for i in $(seq 0 49); do
  printf 'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-%s\ndata:\n  k: v%s\n---\n' "$i" "$i" >> repo/app/x.yaml
done
for i in $(seq 0 4); do
  cat >> repo/app/x.yaml <<Y
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web-$i
spec:
  replicas: 2
  selector: {matchLabels: {app: web-$i}}
  template:
    metadata: {labels: {app: web-$i}}
    spec:
      containers: [{name: web, image: nginx:1.27}]
---
apiVersion: v1
kind: Service
metadata:
  name: web-$i
spec:
  selector: {app: web-$i}
  ports: [{port: 80}]
---
Y
done
git -C repo add -A && git -C repo -c user.email=a@b -c user.name=a commit -qm init
"$T/examples/kube-emulator" "$W/kubeconfig" 2> emulator.log &
"$T/flotilla" serve --data-dir "$W/hub" --listen 127.0.0.1:18443 --http-listen 127.0.0.1:19090 2> hub.log &
for _ in $(seq 100); do [ -f "$W/hub/admin.yaml" ] && [ -f "$W/kubeconfig" ] && break; sleep 0.2; done
F="$T/flotilla --config $W/hub/admin.yaml"
$F repo add apps "file://$W/repo" --branch main --path app >/dev/null
TOKEN=$($F token create --ttl 1h | tr -d '[:space:]')
FLOTILLA_TOKEN="$TOKEN" "$T/flotilla-agent" --hub https://127.0.0.1:18443 --ca "$W/hub/pki/ca.crt" \
  --cluster-name east --kubeconfig "$W/kubeconfig" --state-dir "$W/agent" > agent.log 2>&1 &
AGENT=$!
for _ in $(seq 300); do $F status 2>/dev/null | grep -q "1 Ready" && break; sleep 0.2; done
$F status | head -3
sleep 20
echo "agent idle VmRSS: $(grep VmRSS /proc/$AGENT/status)"
echo "agent VmHWM: $(grep VmHWM /proc/$AGENT/status)"
ls -la "$T/flotilla-agent" | awk '{print "agent binary bytes:", $5}'
