package com.mme.mms;

import java.util.concurrent.ConcurrentHashMap;

/**
 * Names whose registration MMS is running (on an event loop, from reading POST /models until the load's
 * workers are started). MMS's DELETE removed a name's model from the registry while its registration
 * was still under way: MMS then put the model back with its backend stopped, or failed the load with
 * a 500 AssertionError. OffLoopUnload unregisters only a model whose registration is over.
 */
final class Registrations {

    private static final ConcurrentHashMap<String, Integer> RUNNING = new ConcurrentHashMap<>();

    private Registrations() {}

    static void begin(String name) {
        RUNNING.merge(name, 1, Integer::sum);
    }

    static void end(String name) {
        RUNNING.computeIfPresent(name, (k, n) -> n > 1 ? n - 1 : null);
    }

    static boolean running(String name) {
        return RUNNING.containsKey(name);
    }
}
