package com.mme.mms;

import java.nio.charset.StandardCharsets;

/**
 * The text of one scrape, written as UTF-8 bytes into one array that is kept and reused from scrape to
 * scrape. At 1,000 models the text is 1-2.5 MB: built as Strings it was allocated three times over per
 * scrape (builder, String, byte[]), enough to set off one or more young collections of the Java front's
 * small heap in the middle of the scrape, each 25-50 ms with a thousand models' threads to scan.
 * Not thread-safe: ContainerMetrics renders one scrape at a time.
 */
final class ScrapeText {

    private byte[] buf = new byte[256 * 1024];
    private int len;

    void reset() {
        len = 0;
    }

    int length() {
        return len;
    }

    /** The array holding the text in [0, length()): valid until the next reset. */
    byte[] array() {
        return buf;
    }

    private void room(int more) {
        if (len + more > buf.length) {
            byte[] bigger = new byte[Math.max(buf.length * 2, len + more)];
            System.arraycopy(buf, 0, bigger, 0, len);
            buf = bigger;
        }
    }

    ScrapeText append(char c) {
        if (c < 0x80) {
            room(1);
            buf[len++] = (byte) c;
            return this;
        }
        return append(String.valueOf(c));
    }

    ScrapeText append(String s) {
        int n = s.length();
        room(n);
        for (int i = 0; i < n; i++) {
            char c = s.charAt(i);
            if (c >= 0x80) { // rare (a UTF-8 TargetModel): encode the rest the slow way
                byte[] rest = s.substring(i).getBytes(StandardCharsets.UTF_8);
                room(rest.length);
                System.arraycopy(rest, 0, buf, len, rest.length);
                len += rest.length;
                return this;
            }
            buf[len++] = (byte) c;
        }
        return this;
    }

    /** A label value, escaped as the exposition format asks (backslash, quote, newline). */
    ScrapeText escaped(String s) {
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            if (c == '\\' || c == '"') {
                append('\\').append(c);
            } else if (c == '\n') {
                append('\\').append('n');
            } else if (c < 0x80) {
                append(c);
            } else {
                int end = i + 1;
                while (end < s.length() && s.charAt(end) >= 0x80) {
                    end++;
                }
                append(s.substring(i, end)); // a whole run, so surrogate pairs stay together
                i = end - 1;
            }
        }
        return this;
    }

    ScrapeText append(long v) {
        if (v == Long.MIN_VALUE) {
            return append(Long.toString(v));
        }
        room(20);
        if (v < 0) {
            buf[len++] = '-';
            v = -v;
        }
        int start = len;
        do {
            buf[len++] = (byte) ('0' + (v % 10));
            v /= 10;
        } while (v != 0);
        for (int i = start, j = len - 1; i < j; i++, j--) { // digits were written backwards
            byte t = buf[i];
            buf[i] = buf[j];
            buf[j] = t;
        }
        return this;
    }

    /**
     * A sample value: whole numbers without a fraction; positive ones below 1e9 (latency and load-time
     * sums in seconds) to 9 decimals without a String per value; others as Java prints a double.
     */
    ScrapeText value(double v) {
        if (v == Math.rint(v) && Math.abs(v) < 1e15) {
            return append((long) v);
        }
        if (v > 0 && v < 1e9) {
            long nanos = Math.round(v * 1e9);
            append(nanos / 1_000_000_000L).append('.');
            long frac = nanos % 1_000_000_000L;
            int digits = 9;
            while (digits > 1 && frac % 10 == 0) {
                frac /= 10;
                digits--;
            }
            for (long p = pow10(digits - 1); p > frac && p > 1; p /= 10) {
                append('0'); // leading zeros of the fraction
            }
            return append(frac);
        }
        return append(Double.toString(v));
    }

    private static long pow10(int n) {
        long p = 1;
        for (int i = 0; i < n; i++) {
            p *= 10;
        }
        return p;
    }
}
