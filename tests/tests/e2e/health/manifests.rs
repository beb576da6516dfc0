//! The manifests of the health scenarios.

pub(super) use flotilla_tests::fixtures::WEB_DEPLOYMENT as DEPLOYMENT;

pub(super) const CONFIG_MAP: &str = "apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
  greeting: hello
";

pub(super) fn job(name: &str) -> String {
    format!(
        "apiVersion: batch/v1
kind: Job
metadata:
  name: {name}
spec:
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: run
        image: busybox:1.36
"
    )
}

pub(super) const LB_SERVICE: &str = "apiVersion: v1
kind: Service
metadata:
  name: front
spec:
  type: LoadBalancer
  selector: {app: web}
  ports:
  - port: 80
";

pub(super) const CLAIM: &str = "apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: data
spec:
  accessModes: [ReadWriteOnce]
  resources:
    requests: {storage: 1Gi}
";

pub(super) const CRD: &str = "apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: databases.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: databases, singular: database, kind: Database}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec: {type: object, x-kubernetes-preserve-unknown-fields: true}
          status: {type: object, x-kubernetes-preserve-unknown-fields: true}
";

pub(super) const DATABASE: &str = "apiVersion: example.com/v1
kind: Database
metadata:
  name: orders
spec:
  engine: postgres
";
