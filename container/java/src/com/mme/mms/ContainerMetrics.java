package com.mme.mms;

import com.google.gson.JsonElement;
import com.google.gson.JsonParser;
import io.netty.handler.codec.http.FullHttpRequest;
import io.netty.handler.codec.http.HttpMethod;
import io.netty.handler.codec.http.HttpRequest;
import io.netty.handler.codec.http.QueryStringDecoder;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
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

    private ContainerMetrics() {}

    enum Kind {
        NONE,
        INVOKE,
        LOAD,
        UNLOAD,
        DESCRIBE
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
                if (method == HttpMethod.GET) { // not counted: its answer gets the model's version skew
                    return new Pending(Kind.DESCRIBE, decode(path.substring(8)), null);
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

    /**
     * The answer to a noted request is being written; `versionSkew`: a failed load's answer says the
     * load was refused for a version skew (MME_VERSION_SKEW=refuse).
     */
    static void end(Pending p, int status, boolean versionSkew) {
        if (status == 507) {
            INSUFFICIENT_MEMORY.increment();
        }
        if (p.kind == Kind.NONE || p.kind == Kind.DESCRIBE) {
            return;
        }
        HeapTrim.note();
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
                stats.loadAnswered(status, seconds, versionSkew);
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

    /** Model names with their own series. */
    static int tracked() {
        return TRACKED.get();
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
}
