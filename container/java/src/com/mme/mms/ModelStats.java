package com.mme.mms;

import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.DoubleAdder;
import java.util.concurrent.atomic.LongAdder;

/** What the container saw of one model (one MMS model name): counters only, updated without locks. */
final class ModelStats {

    /** Latency bucket bounds in seconds: sub-millisecond resolution for in-process predictions. */
    static final double[] BOUNDS = {
        0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025,
        0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60
    };

    final String key;
    /** The X-Amzn-SageMaker-Target-Model last sent with an invoke of this name, if any. */
    volatile String target;

    final Map<Integer, LongAdder> byStatus = new ConcurrentHashMap<>();
    final LongAdder[] buckets = new LongAdder[BOUNDS.length + 1]; // last: above every bound
    final DoubleAdder latencySum = new DoubleAdder();
    final LongAdder loads = new LongAdder();
    final DoubleAdder loadSeconds = new DoubleAdder();
    final Map<String, LongAdder> loadFailures = new ConcurrentHashMap<>();
    final LongAdder unloads = new LongAdder();

    ModelStats(String key) {
        this.key = key;
        for (int i = 0; i < buckets.length; i++) {
            buckets[i] = new LongAdder();
        }
    }

    String label() {
        String t = target;
        return t != null ? t : key;
    }

    void invoked(int status, double seconds) {
        LongAdder c = byStatus.get(status);
        if (c == null) {
            c = byStatus.computeIfAbsent(status, s -> new LongAdder());
        }
        c.increment();
        int i = 0;
        while (i < BOUNDS.length && seconds > BOUNDS[i]) {
            i++;
        }
        buckets[i].increment();
        latencySum.add(seconds);
    }

    void loadAnswered(int status, double seconds, boolean versionSkew) {
        if (status == 200) {
            loads.increment();
            loadSeconds.add(seconds);
        } else if (status != 409) { // 409: already loaded, which SageMaker takes as loaded
            String cause = versionSkew ? "version_skew" : cause(status);
            loadFailures.computeIfAbsent(cause, s -> new LongAdder()).increment();
        }
    }

    /** A load failure's cause, named from the status the container answered it with. */
    static String cause(int status) {
        switch (status) {
            case 400:
                return "bad_artifact";
            case 404:
                return "not_found";
            case 500:
                return "error";
            case 503:
                return "unavailable";
            case 507:
                return "insufficient_memory";
            default:
                return "status_" + status;
        }
    }
}
