package com.mme.mms;

import com.google.gson.JsonArray;
import com.google.gson.JsonObject;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Opt-in CloudWatch Embedded Metric Format: every _MME_EMF_INTERVAL_S seconds, one JSON line per model
 * that saw traffic, a load, a failed load or an unload in the interval, to stdout (which SageMaker
 * ships to CloudWatch Logs, where EMF lines become metrics). Values are the interval's aggregates.
 */
final class EmfWriter {

    private final String namespace;
    private final Map<String, String> staticDimensions;
    private final PrintStream out;
    private Map<String, double[]> previous = new HashMap<>();

    // Cumulative figures per label, in this order; deltas are taken between intervals.
    private static final int INVOKES = 0, E4XX = 1, E5XX = 2, LAT_SUM = 3, LOADS = 4, LOAD_SUM = 5,
            FAILURES = 6, UNLOADS = 7, WIDTH = 8;

    EmfWriter(String namespace, Map<String, String> staticDimensions, PrintStream out) {
        this.namespace = namespace;
        this.staticDimensions = staticDimensions;
        this.out = out;
    }

    static void startIfConfigured() {
        long interval = ContainerMetrics.longEnv("_MME_EMF_INTERVAL_S", 0);
        if (interval <= 0) {
            return;
        }
        String ns = System.getenv().getOrDefault("_MME_EMF_NAMESPACE", "sklearn-mme");
        EmfWriter writer = new EmfWriter(ns, parseDimensions(System.getenv("_MME_EMF_DIMENSIONS")), System.out);
        Thread t =
                new Thread(
                        () -> {
                            long next = System.currentTimeMillis() + interval * 1000;
                            while (true) {
                                try {
                                    Thread.sleep(Math.max(0, next - System.currentTimeMillis()));
                                } catch (InterruptedException e) {
                                    return;
                                }
                                next += interval * 1000;
                                writer.flush(System.currentTimeMillis());
                            }
                        },
                        "mme-emf");
        t.setDaemon(true);
        t.start();
    }

    /** "Name=value,Name=value" (serve checked the syntax). */
    static Map<String, String> parseDimensions(String text) {
        Map<String, String> out = new LinkedHashMap<>();
        if (text == null || text.isBlank()) {
            return out;
        }
        for (String item : text.split(",")) {
            int eq = item.indexOf('=');
            if (eq > 0) {
                out.put(item.substring(0, eq).trim(), item.substring(eq + 1).trim());
            }
        }
        return out;
    }

    /** Writes this interval's lines (one per model with activity) and remembers the totals. */
    synchronized void flush(long timestampMs) {
        Map<String, double[]> now = new HashMap<>();
        for (Map.Entry<String, List<ModelStats>> g : ContainerMetrics.byLabel().entrySet()) {
            double[] v = new double[WIDTH];
            for (ModelStats s : g.getValue()) {
                for (Map.Entry<Integer, java.util.concurrent.atomic.LongAdder> e : s.byStatus.entrySet()) {
                    long n = e.getValue().sum();
                    v[INVOKES] += n;
                    if (e.getKey() >= 400 && e.getKey() < 500) {
                        v[E4XX] += n;
                    } else if (e.getKey() >= 500) {
                        v[E5XX] += n;
                    }
                }
                v[LAT_SUM] += s.latencySum.sum();
                v[LOADS] += s.loads.sum();
                v[LOAD_SUM] += s.loadSeconds.sum();
                for (java.util.concurrent.atomic.LongAdder n : s.loadFailures.values()) {
                    v[FAILURES] += n.sum();
                }
                v[UNLOADS] += s.unloads.sum();
            }
            now.put(g.getKey(), v);
        }
        StringBuilder lines = new StringBuilder();
        for (Map.Entry<String, double[]> e : now.entrySet()) {
            double[] before = previous.getOrDefault(e.getKey(), new double[WIDTH]);
            double[] d = new double[WIDTH];
            for (int i = 0; i < WIDTH; i++) {
                d[i] = e.getValue()[i] - before[i];
            }
            if (d[INVOKES] > 0 || d[LOADS] > 0 || d[FAILURES] > 0 || d[UNLOADS] > 0) {
                lines.append(line(timestampMs, e.getKey(), d)).append('\n');
            }
        }
        previous = now;
        if (lines.length() > 0) {
            byte[] bytes = lines.toString().getBytes(StandardCharsets.UTF_8);
            synchronized (out) {
                out.write(bytes, 0, bytes.length);
                out.flush();
            }
        }
    }

    String line(long timestampMs, String model, double[] d) {
        JsonObject root = new JsonObject();
        JsonArray metrics = new JsonArray();
        metric(root, metrics, "Invocations", "Count", d[INVOKES]);
        metric(root, metrics, "Invocation4XXErrors", "Count", d[E4XX]);
        metric(root, metrics, "Invocation5XXErrors", "Count", d[E5XX]);
        if (d[INVOKES] > 0) {
            metric(root, metrics, "ModelLatency", "Milliseconds", 1000 * d[LAT_SUM] / d[INVOKES]);
        }
        metric(root, metrics, "ModelLoads", "Count", d[LOADS]);
        if (d[LOADS] > 0) {
            metric(root, metrics, "ModelLoadingTime", "Milliseconds", 1000 * d[LOAD_SUM] / d[LOADS]);
        }
        metric(root, metrics, "ModelLoadFailures", "Count", d[FAILURES]);
        metric(root, metrics, "ModelUnloads", "Count", d[UNLOADS]);

        JsonArray dimensionSet = new JsonArray();
        dimensionSet.add("Model");
        root.addProperty("Model", model);
        for (Map.Entry<String, String> e : staticDimensions.entrySet()) {
            dimensionSet.add(e.getKey());
            root.addProperty(e.getKey(), e.getValue());
        }
        JsonArray dimensions = new JsonArray();
        dimensions.add(dimensionSet);
        JsonObject directive = new JsonObject();
        directive.addProperty("Namespace", namespace);
        directive.add("Dimensions", dimensions);
        directive.add("Metrics", metrics);
        JsonArray directives = new JsonArray();
        directives.add(directive);
        JsonObject aws = new JsonObject();
        aws.addProperty("Timestamp", timestampMs);
        aws.add("CloudWatchMetrics", directives);
        root.add("_aws", aws);
        return root.toString();
    }

    private static void metric(JsonObject root, JsonArray metrics, String name, String unit, double value) {
        JsonObject m = new JsonObject();
        m.addProperty("Name", name);
        m.addProperty("Unit", unit);
        metrics.add(m);
        root.addProperty(name, value);
    }
}
