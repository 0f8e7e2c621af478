package com.mme.mms;

import com.amazonaws.ml.mms.wlm.Model;
import com.amazonaws.ml.mms.wlm.ModelManager;
import com.google.gson.JsonElement;
import com.google.gson.JsonParser;
import io.netty.handler.codec.http.FullHttpRequest;
import io.netty.handler.codec.http.HttpMethod;
import io.netty.handler.codec.http.HttpRequest;
import io.netty.handler.codec.http.QueryStringDecoder;
import java.io.IOException;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.nio.file.attribute.FileTime;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.LongAdder;

/**
 * The container's per-model metrics: what InvokeMetricsHandler saw of every answer (invokes by status
 * and latency, loads, load failures, unloads), what Python measured (bytes per model, from the memory
 * ledger that container/mms_entry.py writes), and MMS's own state (models, workers), read when scraped.
 *
 * <p>Series are kept per MMS model name and labelled, when scraped, with the TargetModel header last
 * sent with an invoke of that name (SageMaker's opaque name otherwise). At most MAX_MODELS names get
 * their own series; past that, new names count under model="other".
 */
final class ContainerMetrics {

    static final String TARGET_HEADER = "X-Amzn-SageMaker-Target-Model";
    static final String OTHER = "other";
    static final int MAX_MODELS = intEnv("_MME_METRICS_MAX_MODELS", 500);

    static final ConcurrentHashMap<String, ModelStats> MODELS = new ConcurrentHashMap<>();
    static final ModelStats OTHER_STATS = new ModelStats(OTHER);
    private static final AtomicInteger TRACKED = new AtomicInteger();
    static final LongAdder INSUFFICIENT_MEMORY = new LongAdder();
    static final Pending NONE = new Pending(Kind.NONE, null, null);

    private static final Ledger LEDGER = new Ledger(System.getenv("_MME_STATE_DIR"));
    private static final long BUDGET = longEnv("_MME_MEMORY_BUDGET_BYTES", 0);
    private static final int CHUNK = 64 * 1024;

    private ContainerMetrics() {}

    enum Kind {
        NONE,
        INVOKE,
        LOAD,
        UNLOAD
    }

    /** A request seen arriving: what it is, for which model, and when. */
    static final class Pending {
        final Kind kind;
        final String name;
        final String target;
        final long startNanos;

        Pending(Kind kind, String name, String target) {
            this.kind = kind;
            this.name = name;
            this.target = target;
            this.startNanos = kind == Kind.NONE ? 0 : System.nanoTime();
        }
    }

    /** Classifies a request as it arrives (on the event loop: string checks only, no I/O). */
    static Pending begin(HttpRequest req) {
        String uri = req.uri();
        int q = uri.indexOf('?');
        String path = q < 0 ? uri : uri.substring(0, q);
        HttpMethod method = req.method();
        if (path.startsWith("/models/")) {
            int slash = path.indexOf('/', 8);
            if (slash < 0) {
                if (method == HttpMethod.DELETE) {
                    return new Pending(Kind.UNLOAD, decode(path.substring(8)), null);
                }
                return NONE;
            }
            if (method == HttpMethod.POST && path.endsWith("/invoke") && slash == path.length() - 7) {
                return invoke(req, decode(path.substring(8, slash)));
            }
            return NONE;
        }
        if (path.startsWith("/predictions/") && path.indexOf('/', 13) < 0) {
            return invoke(req, decode(path.substring(13)));
        }
        if (method == HttpMethod.POST && (path.equals("/models") || path.equals("/models/"))) {
            return new Pending(Kind.LOAD, loadName(req, uri), null);
        }
        return NONE;
    }

    private static Pending invoke(HttpRequest req, String name) {
        return new Pending(Kind.INVOKE, name, utf8(req.headers().get(TARGET_HEADER)));
    }

    /** Netty reads header bytes as ISO-8859-1; SageMaker's TargetModel is UTF-8 (any printable character). */
    static String utf8(String header) {
        if (header == null) {
            return null;
        }
        byte[] raw = header.getBytes(java.nio.charset.StandardCharsets.ISO_8859_1);
        java.nio.charset.CharsetDecoder strict = java.nio.charset.StandardCharsets.UTF_8.newDecoder();
        try {
            return strict.decode(java.nio.ByteBuffer.wrap(raw)).toString();
        } catch (java.nio.charset.CharacterCodingException e) {
            return header; // not UTF-8: keep what was sent
        }
    }

    /** The model_name of a load: MMS takes it from the query or the JSON body. */
    private static String loadName(HttpRequest req, String uri) {
        List<String> fromQuery = new QueryStringDecoder(uri).parameters().get("model_name");
        if (fromQuery != null && !fromQuery.isEmpty()) {
            return fromQuery.get(0);
        }
        if (req instanceof FullHttpRequest) {
            try {
                String body = ((FullHttpRequest) req).content().toString(StandardCharsets.UTF_8);
                JsonElement name = JsonParser.parseString(body).getAsJsonObject().get("model_name");
                if (name != null && name.isJsonPrimitive()) {
                    return name.getAsString();
                }
            } catch (RuntimeException e) {
                // not JSON: MMS answers 400, counted under no model
            }
        }
        return null;
    }

    private static String decode(String segment) {
        return segment.indexOf('%') < 0 ? segment : QueryStringDecoder.decodeComponent(segment);
    }

    /** The answer to a noted request is being written. */
    static void end(Pending p, int status) {
        if (status == 507) {
            INSUFFICIENT_MEMORY.increment();
        }
        if (p.kind == Kind.NONE) {
            return;
        }
        double seconds = (System.nanoTime() - p.startNanos) / 1e9;
        ModelStats stats = p.name == null ? OTHER_STATS : statsFor(p.name);
        switch (p.kind) {
            case INVOKE:
                stats.invoked(status, seconds);
                if (p.target != null && stats != OTHER_STATS && !p.target.equals(stats.target)) {
                    stats.target = p.target;
                }
                break;
            case LOAD:
                stats.loadAnswered(status, seconds);
                break;
            case UNLOAD:
                if (status == 200) {
                    stats.unloads.increment();
                }
                break;
            default:
                break;
        }
    }

    /** The model's stats, or the shared "other" once MAX_MODELS names are tracked. */
    static ModelStats statsFor(String name) {
        ModelStats s = MODELS.get(name);
        if (s != null) {
            return s;
        }
        if (TRACKED.incrementAndGet() > MAX_MODELS) {
            TRACKED.decrementAndGet();
            return OTHER_STATS;
        }
        ModelStats fresh = new ModelStats(name);
        ModelStats raced = MODELS.putIfAbsent(name, fresh);
        if (raced != null) {
            TRACKED.decrementAndGet();
            return raced;
        }
        return fresh;
    }

    /** The label a model name's series carry (its TargetModel, its name, or "other" past the cap). */
    static String labelOf(String name) {
        ModelStats s = MODELS.get(name);
        if (s != null) {
            return s.label();
        }
        return TRACKED.get() >= MAX_MODELS ? OTHER : name;
    }

    /** Stats grouped by label (two names may share a TargetModel), "other" last. */
    static Map<String, List<ModelStats>> byLabel() {
        Map<String, List<ModelStats>> out = new LinkedHashMap<>();
        for (ModelStats s : MODELS.values()) {
            out.computeIfAbsent(s.label(), k -> new ArrayList<>(1)).add(s);
        }
        out.computeIfAbsent(OTHER, k -> new ArrayList<>(1)).add(OTHER_STATS);
        return out;
    }

    /**
     * Prometheus text exposition format 0.0.4, written to out in chunks: at 1,000 models the text is
     * ~1 MB, and one String of it (plus its byte[] copy) would be humongous objects for G1 on the
     * container's small heap, each costing a collection.
     */
    static void render(OutputStream out) throws IOException {
        StringBuilder b = new StringBuilder(CHUNK + 4096);
        Map<String, List<ModelStats>> groups = byLabel();

        family(b, "mme_container_invocations_total", "counter",
                "Invocations answered by the container, by model and HTTP status");
        for (Map.Entry<String, List<ModelStats>> g : groups.entrySet()) {
            Map<Integer, Long> sums = new java.util.TreeMap<>();
            for (ModelStats s : g.getValue()) {
                s.byStatus.forEach((code, n) -> sums.merge(code, n.sum(), Long::sum));
            }
            for (Map.Entry<Integer, Long> e : sums.entrySet()) {
                sample(b, "mme_container_invocations_total", g.getKey(), "status",
                        String.valueOf(e.getKey()), e.getValue());
            }
        }

        family(b, "mme_container_invocation_latency_seconds", "histogram",
                "Container-side invoke latency: request read to answer written, by model");
        for (Map.Entry<String, List<ModelStats>> g : groups.entrySet()) {
            long[] counts = new long[ModelStats.BOUNDS.length + 1];
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
            // 23 bucket lines per model: the label is escaped once, the bounds were formatted once.
            String model = labelSet(g.getKey());
            long cumulative = 0;
            for (int i = 0; i < BOUND_LABELS.length; i++) {
                cumulative += i < ModelStats.BOUNDS.length ? counts[i] : 0;
                b.append("mme_container_invocation_latency_seconds_bucket{").append(model)
                        .append(BOUND_LABELS[i]).append(i < ModelStats.BOUNDS.length ? cumulative : total)
                        .append('\n');
            }
            sample(b, "mme_container_invocation_latency_seconds_sum", g.getKey(), null, null, sum);
            sample(b, "mme_container_invocation_latency_seconds_count", g.getKey(), null, null, total);
            spill(b, out);
        }

        spill(b, out);
        family(b, "mme_container_model_loading_seconds", "summary",
                "Successful loads (POST /models answered 200) and their time, by model");
        for (Map.Entry<String, List<ModelStats>> g : groups.entrySet()) {
            long n = 0;
            double sum = 0;
            for (ModelStats s : g.getValue()) {
                n += s.loads.sum();
                sum += s.loadSeconds.sum();
            }
            if (n > 0) {
                sample(b, "mme_container_model_loading_seconds_count", g.getKey(), null, null, n);
                sample(b, "mme_container_model_loading_seconds_sum", g.getKey(), null, null, sum);
            }
        }

        spill(b, out);
        family(b, "mme_container_model_load_failures_total", "counter",
                "Loads answered with an error, by model and cause (from the status)");
        for (Map.Entry<String, List<ModelStats>> g : groups.entrySet()) {
            Map<String, Long> sums = new java.util.TreeMap<>();
            for (ModelStats s : g.getValue()) {
                s.loadFailures.forEach((cause, n) -> sums.merge(cause, n.sum(), Long::sum));
            }
            for (Map.Entry<String, Long> e : sums.entrySet()) {
                sample(b, "mme_container_model_load_failures_total", g.getKey(), "cause", e.getKey(),
                        e.getValue());
            }
        }

        spill(b, out);
        family(b, "mme_container_model_unloads_total", "counter", "Unloads (DELETE answered 200), by model");
        for (Map.Entry<String, List<ModelStats>> g : groups.entrySet()) {
            long n = 0;
            for (ModelStats s : g.getValue()) {
                n += s.unloads.sum();
            }
            if (n > 0) {
                sample(b, "mme_container_model_unloads_total", g.getKey(), null, null, n);
            }
        }

        spill(b, out);
        Map<String, Model> models = ModelManager.getInstance() == null
                ? Map.of() : ModelManager.getInstance().getModels();
        family(b, "mme_container_model_workers", "gauge", "Worker threads MMS runs for a loaded model");
        Map<String, Long> workers = new LinkedHashMap<>();
        for (String name : models.keySet()) {
            workers.merge(labelOf(name), (long) ModelManager.getInstance().getWorkers(name).size(), Long::sum);
        }
        workers.forEach((label, n) -> sample(b, "mme_container_model_workers", label, null, null, n));

        spill(b, out);
        family(b, "mme_container_model_bytes", "gauge",
                "Bytes a loaded model holds, as measured by the handler when it loaded (the memory ledger)");
        Map<String, Long> held = LEDGER.byName(models.keySet());
        Map<String, Long> bytes = new LinkedHashMap<>();
        long total = 0;
        for (Map.Entry<String, Long> e : held.entrySet()) {
            bytes.merge(labelOf(e.getKey()), e.getValue(), Long::sum);
            total += e.getValue();
        }
        bytes.forEach((label, n) -> sample(b, "mme_container_model_bytes", label, null, null, n));

        spill(b, out);
        family(b, "mme_container_loaded_models", "gauge", "Models registered in the container");
        sample(b, "mme_container_loaded_models", null, null, null, models.size());
        family(b, "mme_container_bytes_held", "gauge", "Bytes all loaded models hold (the memory ledger)");
        sample(b, "mme_container_bytes_held", null, null, null, total);
        if (BUDGET > 0) {
            family(b, "mme_container_memory_budget_bytes", "gauge", "MME_MEMORY_BUDGET");
            sample(b, "mme_container_memory_budget_bytes", null, null, null, BUDGET);
        }
        family(b, "mme_container_insufficient_memory_total", "counter",
                "Answers with status 507 (no room), loads and invokes");
        sample(b, "mme_container_insufficient_memory_total", null, null, null, INSUFFICIENT_MEMORY.sum());
        family(b, "mme_container_zygote_restarts_total", "counter",
                "Times serve restarted the pre-warmed zygote after it exited");
        sample(b, "mme_container_zygote_restarts_total", null, null, null, LEDGER.zygoteRestarts());
        family(b, "mme_container_metrics_tracked_models", "gauge",
                "Model names with their own series (at most MME_METRICS_MAX_MODELS; past it: model=\"other\")");
        sample(b, "mme_container_metrics_tracked_models", null, null, null, TRACKED.get());
        out.write(b.toString().getBytes(StandardCharsets.UTF_8));
    }

    /** Moves the text so far to out once it is a chunk long (chunks stay below G1's humongous size). */
    private static void spill(StringBuilder b, OutputStream out) throws IOException {
        if (b.length() >= CHUNK) {
            out.write(b.toString().getBytes(StandardCharsets.UTF_8));
            b.setLength(0);
        }
    }

    private static void family(StringBuilder b, String name, String type, String help) {
        String base = type.equals("counter") && name.endsWith("_total")
                ? name.substring(0, name.length() - 6) : name;
        b.append("# HELP ").append(base).append(' ').append(help).append('\n');
        b.append("# TYPE ").append(base).append(' ').append(type).append('\n');
    }

    private static void sample(StringBuilder b, String name, String model, String key, String value,
            double v) {
        b.append(name);
        if (model != null || key != null) {
            b.append('{');
            if (model != null) {
                b.append("model=\"");
                escape(b, model);
                b.append('"');
            }
            if (key != null) {
                if (model != null) {
                    b.append(',');
                }
                b.append(key).append("=\"");
                escape(b, value);
                b.append('"');
            }
            b.append('}');
        }
        b.append(' ');
        if (v == Math.rint(v) && Math.abs(v) < 1e15) {
            b.append((long) v);
        } else {
            b.append(v);
        }
        b.append('\n');
    }

    /** `,le="0.0001"} ` ... `,le="+Inf"} `: the bucket label of each bound, formatted once. */
    private static final String[] BOUND_LABELS = boundLabels();

    private static String[] boundLabels() {
        String[] out = new String[ModelStats.BOUNDS.length + 1];
        for (int i = 0; i < out.length; i++) {
            String le = i < ModelStats.BOUNDS.length ? fmt(ModelStats.BOUNDS[i]) : "+Inf";
            out[i] = ",le=\"" + le + "\"} ";
        }
        return out;
    }

    /** `model="LABEL"`, escaped. */
    private static String labelSet(String model) {
        StringBuilder b = new StringBuilder(model.length() + 9).append("model=\"");
        escape(b, model);
        return b.append('"').toString();
    }

    static String fmt(double bound) {
        // Plain decimals as prometheus_client writes them ("0.0001", "1.0"), never "1.0E-4".
        String plain = java.math.BigDecimal.valueOf(bound).stripTrailingZeros().toPlainString();
        return plain.contains(".") ? plain : plain + ".0";
    }

    private static void escape(StringBuilder b, String s) {
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            if (c == '\\' || c == '"') {
                b.append('\\').append(c);
            } else if (c == '\n') {
                b.append("\\n");
            } else {
                b.append(c);
            }
        }
    }

    static int intEnv(String name, int fallback) {
        return (int) longEnv(name, fallback);
    }

    static long longEnv(String name, long fallback) {
        String v = System.getenv(name);
        try {
            return v == null || v.isEmpty() ? fallback : Long.parseLong(v.trim());
        } catch (NumberFormatException e) {
            return fallback; // serve validated it; a stray value keeps the default
        }
    }

    /**
     * The memory ledger (container/ledger.py): one file per backend process, a "BYTES NAME" line per model
     * it holds (one for a model's own worker, many for a shared host). Read at
     * scrape time only, and again only when the directory changed; entries of dead processes are left
     * out (Python sweeps them on its next load).
     */
    static final class Ledger {
        private static final Path PROC = Paths.get("/proc");
        private final Path dir;
        private FileTime seen;
        private Map<Long, List<Object[]>> entries = Map.of(); // pid -> [{name, bytes}, ...]

        Ledger(String dir) {
            this.dir = dir == null || dir.isEmpty() ? null : Paths.get(dir);
        }

        /** Bytes per model name, of live processes whose model is registered (unloaded: nothing). */
        synchronized Map<String, Long> byName(Set<String> registered) {
            if (dir == null) {
                return Map.of();
            }
            try {
                FileTime now = Files.getLastModifiedTime(dir);
                if (!now.equals(seen)) {
                    Map<Long, List<Object[]>> fresh = new HashMap<>();
                    try (DirectoryStream<Path> ds = Files.newDirectoryStream(dir)) {
                        for (Path p : ds) {
                            String f = p.getFileName().toString();
                            if (!f.chars().allMatch(Character::isDigit)) {
                                continue;
                            }
                            try {
                                List<Object[]> held = new ArrayList<>();
                                for (String line : Files.readString(p).split("\n")) {
                                    String[] parts = line.trim().split(" ", 2);
                                    if (parts.length == 2) {
                                        held.add(new Object[] {parts[1], Long.parseLong(parts[0])});
                                    }
                                }
                                fresh.put(Long.parseLong(f), held);
                            } catch (IOException | NumberFormatException e) {
                                // replaced or removed meanwhile
                            }
                        }
                    }
                    entries = fresh;
                    seen = now;
                }
            } catch (IOException e) {
                return Map.of();
            }
            Map<String, Long> out = new LinkedHashMap<>();
            if (entries.isEmpty()) {
                return out;
            }
            Set<Long> live = livePids();
            for (Map.Entry<Long, List<Object[]>> e : entries.entrySet()) {
                if (live == null
                        ? !ProcessHandle.of(e.getKey()).map(ProcessHandle::isAlive).orElse(false)
                        : !live.contains(e.getKey())) {
                    continue;
                }
                for (Object[] held : e.getValue()) {
                    // An unloaded model's worker may still be exiting (or a zombie, which /proc lists).
                    if (registered.contains((String) held[0])) {
                        out.merge((String) held[0], (Long) held[1], Long::sum);
                    }
                }
            }
            return out;
        }

        /**
         * The pids in /proc, or null where there is no /proc. One directory listing costs far less than
         * a ProcessHandle lookup per ledger entry (a /proc/PID/stat read each: ~30 ms per scrape at
         * 1,000 models).
         */
        private static Set<Long> livePids() {
            Set<Long> live = new HashSet<>();
            try (DirectoryStream<Path> ds = Files.newDirectoryStream(PROC)) {
                for (Path p : ds) {
                    String f = p.getFileName().toString();
                    char c = f.charAt(0);
                    if (c >= '0' && c <= '9') {
                        try {
                            live.add(Long.parseLong(f));
                        } catch (NumberFormatException e) {
                            // not a process
                        }
                    }
                }
            } catch (IOException e) {
                return null;
            }
            return live;
        }

        long zygoteRestarts() {
            if (dir == null) {
                return 0;
            }
            try {
                return Long.parseLong(Files.readString(dir.resolve("zygote-restarts")).trim());
            } catch (IOException | NumberFormatException e) {
                return 0;
            }
        }
    }
}
