package com.mme.mms;

import com.amazonaws.ml.mms.wlm.ModelManager;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;

/**
 * Renders the container's metrics (ContainerMetrics' counters, the memory ledger, MMS's own state) as
 * Prometheus text exposition format 0.0.4 into one reused ScrapeText, one scrape at a time. Apart from
 * the ledger's and /proc's listings, a scrape allocates little: the numbers are written straight into
 * the reused bytes.
 */
final class MetricsText {

    static final LedgerReader LEDGER = new LedgerReader(System.getenv("_MME_STATE_DIR"));
    private static final long BUDGET = ContainerMetrics.longEnv("_MME_MEMORY_BUDGET_BYTES", 0);
    private static final ScrapeText TEXT = new ScrapeText();
    private static final String LATENCY = "mme_container_invocation_latency_seconds";
    /** `,le="0.0001"} ` ... `,le="+Inf"} `: the bucket label of each bound, formatted once. */
    private static final String[] BOUND_LABELS = boundLabels();

    private MetricsText() {}

    /** The registered models, or none before MMS made its ModelManager. */
    static Set<String> registered() {
        ModelManager m = ModelManager.getInstance();
        return m == null ? Set.of() : m.getModels().keySet();
    }

    /**
     * The text of a scrape of `groups` (ContainerMetrics.byLabel()) with `models` registered; the
     * result is valid until the next call, so callers hold this class's lock while they use it.
     */
    static ScrapeText render(Map<String, List<ModelStats>> groups, Set<String> models) {
        ScrapeText t = TEXT;
        t.reset();
        invocations(t, groups);
        latency(t, groups);
        loads(t, groups);
        workers(t, models);
        List<LedgerReader.Entry> live = LEDGER.live(models);
        long total = bytes(t, live);
        skews(t, live);
        containerWide(t, models.size(), total);
        hosts(t, live);
        return t;
    }

    private static void invocations(ScrapeText t, Map<String, List<ModelStats>> groups) {
        family(t, "mme_container_invocations_total", "counter",
                "Invocations answered by the container, by model and HTTP status");
        Map<Integer, Long> sums = new TreeMap<>();
        for (Map.Entry<String, List<ModelStats>> g : groups.entrySet()) {
            if (g.getValue().size() == 1) { // the usual case: no sums to make
                String label = g.getKey();
                g.getValue().get(0).byStatus.forEach((code, n) -> {
                    sample(t, "mme_container_invocations_total", label, "status", null, code);
                    t.value(n.sum()).append('\n');
                });
                continue;
            }
            sums.clear();
            for (ModelStats s : g.getValue()) {
                s.byStatus.forEach((code, n) -> sums.merge(code, n.sum(), Long::sum));
            }
            for (Map.Entry<Integer, Long> e : sums.entrySet()) {
                sample(t, "mme_container_invocations_total", g.getKey(), "status", null, e.getKey());
                t.value(e.getValue()).append('\n');
            }
        }
    }

    private static void latency(ScrapeText t, Map<String, List<ModelStats>> groups) {
        family(t, LATENCY, "histogram", "Container-side invoke latency: request read to answer written, by model");
        long[] counts = new long[ModelStats.BOUNDS.length + 1];
        for (Map.Entry<String, List<ModelStats>> g : groups.entrySet()) {
            java.util.Arrays.fill(counts, 0);
            double sum = 0;
            for (ModelStats s : g.getValue()) {
                for (int i = 0; i < counts.length; i++) {
                    counts[i] += s.buckets[i].sum();
                }
                sum += s.latencySum.sum();
            }
            long total = 0;
            for (long c : counts) {
                total += c;
            }
            if (total == 0) {
                continue;
            }
            long cumulative = 0;
            for (int i = 0; i < BOUND_LABELS.length; i++) {
                cumulative += i < ModelStats.BOUNDS.length ? counts[i] : 0;
                t.append(LATENCY).append("_bucket{model=\"").escaped(g.getKey()).append('"')
                        .append(BOUND_LABELS[i]).append(i < ModelStats.BOUNDS.length ? cumulative : total)
                        .append('\n');
            }
            sample(t, LATENCY + "_sum", g.getKey(), null, null, 0);
            t.value(sum).append('\n');
            sample(t, LATENCY + "_count", g.getKey(), null, null, 0);
            t.value(total).append('\n');
        }
    }

    private static void loads(ScrapeText t, Map<String, List<ModelStats>> groups) {
        family(t, "mme_container_model_loading_seconds", "summary",
                "Successful loads (POST /models answered 200) and their time, by model");
        for (Map.Entry<String, List<ModelStats>> g : groups.entrySet()) {
            long n = 0;
            double sum = 0;
            for (ModelStats s : g.getValue()) {
                n += s.loads.sum();
                sum += s.loadSeconds.sum();
            }
            if (n > 0) {
                gauge(t, "mme_container_model_loading_seconds_count", g.getKey(), n);
                gauge(t, "mme_container_model_loading_seconds_sum", g.getKey(), sum);
            }
        }
        family(t, "mme_container_model_load_failures_total", "counter",
                "Loads answered with an error, by model and cause (from the status)");
        Map<String, Long> causes = new TreeMap<>();
        for (Map.Entry<String, List<ModelStats>> g : groups.entrySet()) {
            causes.clear();
            for (ModelStats s : g.getValue()) {
                s.loadFailures.forEach((cause, n) -> causes.merge(cause, n.sum(), Long::sum));
            }
            for (Map.Entry<String, Long> e : causes.entrySet()) {
                sample(t, "mme_container_model_load_failures_total", g.getKey(), "cause", e.getKey(), 0);
                t.value(e.getValue()).append('\n');
            }
        }
        family(t, "mme_container_model_unloads_total", "counter", "Unloads (DELETE answered 200), by model");
        for (Map.Entry<String, List<ModelStats>> g : groups.entrySet()) {
            long n = 0;
            for (ModelStats s : g.getValue()) {
                n += s.unloads.sum();
            }
            if (n > 0) {
                gauge(t, "mme_container_model_unloads_total", g.getKey(), n);
            }
        }
    }

    private static void workers(ScrapeText t, Set<String> models) {
        family(t, "mme_container_model_workers", "gauge", "Worker threads MMS runs for a loaded model");
        ModelManager m = ModelManager.getInstance();
        Map<String, Long> workers = new LinkedHashMap<>();
        for (String name : models) {
            workers.merge(ContainerMetrics.labelOf(name), (long) m.getWorkers(name).size(), Long::sum);
        }
        workers.forEach((label, n) -> gauge(t, "mme_container_model_workers", label, n));
    }

    private static long bytes(ScrapeText t, List<LedgerReader.Entry> live) {
        family(t, "mme_container_model_bytes", "gauge",
                "Bytes a loaded model holds, as measured by the handler when it loaded (the memory ledger)");
        Map<String, Long> bytes = new LinkedHashMap<>();
        long total = 0;
        for (LedgerReader.Entry e : live) {
            bytes.merge(ContainerMetrics.labelOf(e.name), e.bytes, Long::sum);
            total += e.bytes;
        }
        bytes.forEach((label, n) -> gauge(t, "mme_container_model_bytes", label, n));
        return total;
    }

    /** One series per model and skewed library: the versions are labels, the value counts models. */
    private static void skews(ScrapeText t, List<LedgerReader.Entry> live) {
        family(t, "mme_container_model_version_skew", "gauge",
                "Loaded models written by another library version than the installed one (MME_VERSION_SKEW)");
        Map<List<String>, Long> series = new LinkedHashMap<>();
        for (LedgerReader.Entry e : live) {
            for (LedgerReader.Skew s : e.skews) {
                series.merge(List.of(ContainerMetrics.labelOf(e.name), s.library, s.written, s.installed), 1L,
                        Long::sum);
            }
        }
        series.forEach((k, n) -> t.append("mme_container_model_version_skew{model=\"").escaped(k.get(0))
                .append("\",library=\"").escaped(k.get(1)).append("\",written=\"").escaped(k.get(2))
                .append("\",installed=\"").escaped(k.get(3)).append("\"} ").append(n).append('\n'));
    }

    private static void containerWide(ScrapeText t, int loaded, long held) {
        family(t, "mme_container_loaded_models", "gauge", "Models registered in the container");
        gauge(t, "mme_container_loaded_models", null, loaded);
        family(t, "mme_container_bytes_held", "gauge", "Bytes all loaded models hold (the memory ledger)");
        gauge(t, "mme_container_bytes_held", null, held);
        if (BUDGET > 0) {
            family(t, "mme_container_memory_budget_bytes", "gauge", "MME_MEMORY_BUDGET");
            gauge(t, "mme_container_memory_budget_bytes", null, BUDGET);
        }
        family(t, "mme_container_insufficient_memory_total", "counter",
                "Answers with status 507 (no room), loads and invokes");
        gauge(t, "mme_container_insufficient_memory_total", null, ContainerMetrics.INSUFFICIENT_MEMORY.sum());
        family(t, "mme_container_zygote_restarts_total", "counter",
                "Times serve restarted the pre-warmed zygote after it exited");
        gauge(t, "mme_container_zygote_restarts_total", null, LEDGER.zygoteRestarts());
        family(t, "mme_container_java_heap_trims_total", "counter",
                "Full collections the Java front ran to give its heap back once requests were quiet");
        gauge(t, "mme_container_java_heap_trims_total", null, HeapTrim.trims());
        family(t, "mme_container_metrics_tracked_models", "gauge",
                "Model names with their own series (at most MME_METRICS_MAX_MODELS; past it: model=\"other\")");
        gauge(t, "mme_container_metrics_tracked_models", null, ContainerMetrics.tracked());
    }

    /**
     * Where the shared host processes exist (MME_BACKEND=hosts; the zygote writes the events file then):
     * how many models they hold, and the zygote's counts of models moved out of them and of hosts replaced.
     */
    private static void hosts(ScrapeText t, List<LedgerReader.Entry> live) {
        List<String[]> events = LEDGER.hostEvents();
        if (events.isEmpty()) {
            return;
        }
        Set<String> hosted = new HashSet<>();
        for (LedgerReader.Entry e : live) {
            if (e.sharedHost) {
                hosted.add(e.name);
            }
        }
        family(t, "mme_container_hosted_models", "gauge",
                "Loaded models held by the shared host processes (the others have a process of their own, "
                        + "or reload into a host on their next request)");
        gauge(t, "mme_container_hosted_models", null, hosted.size());
        eventFamily(t, events, "moves", "mme_container_model_moves_total", "reason",
                "Hosted models given a process of their own: slow predicts, or in flight when their host died");
        eventFamily(t, events, "host_replacements", "mme_container_host_replacements_total", "cause",
                "Shared host processes that ended and were replaced (an emptied host's recycling not counted)");
    }

    private static void eventFamily(ScrapeText t, List<String[]> events, String kind, String name,
                                    String label, String help) {
        family(t, name, "counter", help);
        for (String[] e : events) {
            if (e[0].equals(kind)) {
                sample(t, name, null, label, e[1], 0);
                t.append(e[2]).append('\n');
            }
        }
    }

    private static void family(ScrapeText t, String name, String type, String help) {
        String base = type.equals("counter") && name.endsWith("_total")
                ? name.substring(0, name.length() - 6) : name;
        t.append("# HELP ").append(base).append(' ').append(help).append('\n');
        t.append("# TYPE ").append(base).append(' ').append(type).append('\n');
    }

    private static void gauge(ScrapeText t, String name, String model, double v) {
        sample(t, name, model, null, null, 0);
        t.value(v).append('\n');
    }

    /**
     * `name{model="M",key="value"} ` (the value follows); a null value with a key: an int label, `n`.
     */
    private static void sample(ScrapeText t, String name, String model, String key, String value, long n) {
        t.append(name);
        if (model != null || key != null) {
            t.append('{');
            if (model != null) {
                t.append("model=\"").escaped(model).append('"');
            }
            if (key != null) {
                if (model != null) {
                    t.append(',');
                }
                t.append(key).append("=\"");
                if (value != null) {
                    t.escaped(value);
                } else {
                    t.append(n);
                }
                t.append('"');
            }
            t.append('}');
        }
        t.append(' ');
    }

    private static String[] boundLabels() {
        String[] out = new String[ModelStats.BOUNDS.length + 1];
        for (int i = 0; i < out.length; i++) {
            String le = i < ModelStats.BOUNDS.length ? fmt(ModelStats.BOUNDS[i]) : "+Inf";
            out[i] = ",le=\"" + le + "\"} ";
        }
        return out;
    }

    static String fmt(double bound) {
        // Plain decimals as prometheus_client writes them ("0.0001", "1.0"), never "1.0E-4".
        String plain = java.math.BigDecimal.valueOf(bound).stripTrailingZeros().toPlainString();
        return plain.contains(".") ? plain : plain + ".0";
    }
}
