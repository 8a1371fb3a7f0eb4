// Validates Prometheus Operator resources against the CRDs' OpenAPI schemas, which
// @kubernetes-models/prometheus-operator ships compiled into validators.
// stdin: a JSON array of manifests. Prints one line per problem; exit 1 if any.
import { readFileSync } from "node:fs";
import { PrometheusRule } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";

const models = { PrometheusRule, ServiceMonitor };
const manifests = JSON.parse(readFileSync(0, "utf8"));
let problems = 0;
for (const manifest of manifests) {
  const name = `${manifest.kind}/${manifest.metadata?.name}`;
  const Model = manifest.apiVersion === "monitoring.coreos.com/v1" ? models[manifest.kind] : undefined;
  if (Model === undefined) {
    console.log(`${name}: no schema for ${manifest.apiVersion} ${manifest.kind}`);
    problems += 1;
    continue;
  }
  try {
    new Model(manifest).validate();
    console.log(`${name}: valid`);
  } catch (error) {
    console.log(`${name}: ${error.message}`);
    problems += 1;
  }
}
process.exit(problems === 0 ? 0 : 1);
