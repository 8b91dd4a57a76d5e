package org.tfmobile.bench

import android.app.Activity
import android.os.Build
import android.os.Bundle
import android.os.SystemClock
import android.util.Log
import android.widget.TextView
import org.json.JSONArray
import org.json.JSONObject
import org.tensorflow.lite.Delegate
import org.tensorflow.lite.Interpreter
import org.tensorflow.lite.gpu.GpuDelegate
import org.tensorflow.lite.nnapi.NnApiDelegate
import java.io.File
import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.io.RandomAccessFile
import java.nio.channels.FileChannel
import kotlin.concurrent.thread
import kotlin.random.Random

/**
 * Benchmarks one .tflite given by intent extras and reports one JSON line.
 *
 *   adb shell am start -W -n org.tfmobile.bench/.BenchmarkActivity \
 *       --es model /data/local/tmp/tfmobile/m.tflite --ei threads 1 --ei runs 50 --ei warmup 10 \
 *       --es delegate XNNPACK --es run_id abc123
 *
 * Result: logcat tag "TfmobileBench" (one line, JSON) and files/results/<run_id>.json in the app's
 * external files dir (/sdcard/Android/data/org.tfmobile.bench/files/results/, pullable without root).
 * JSON: {"tfmobile_bench":1,"run_id","status":"ok"|"error","error"?,"model","delegate","threads","runs",
 *        "warmup","init_ms","warmup_ms":[..],"times_ms":[..],"runtime","device":{..},"result_file"}
 * A log line longer than MAX_LOG_JSON chars drops warmup_ms/times_ms (the file keeps them).
 */
class BenchmarkActivity : Activity() {

    companion object {
        const val TAG = "TfmobileBench"
        const val MAX_LOG_JSON = 3500
        val DELEGATES = setOf("CPU", "XNNPACK", "GPU", "NNAPI")
    }

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        val status = TextView(this).apply { text = "tfmobile bench: running…" }
        setContentView(status)
        val extras = intent.extras ?: Bundle()
        val model = extras.getString("model") ?: ""
        val threads = extras.getInt("threads", 1)
        val runs = extras.getInt("runs", 50)
        val warmup = extras.getInt("warmup", 10)
        val delegate = (extras.getString("delegate") ?: "XNNPACK").uppercase()
        val runId = extras.getString("run_id") ?: SystemClock.elapsedRealtimeNanos().toString()
        // Off the UI thread: a long benchmark must not trigger an ANR. The activity stays in the
        // foreground while it runs, so the CPU governor treats it as interactive work.
        thread(name = "tfmobile-bench") {
            val result = runBenchmark(model, threads, runs, warmup, delegate, runId)
            report(result, runId)
            runOnUiThread {
                status.text = "tfmobile bench: ${result.optString("status")} ${result.optString("error", "")}"
                finish()
            }
        }
    }

    private fun base(model: String, threads: Int, runs: Int, warmup: Int, delegate: String, runId: String) =
        JSONObject().apply {
            put("tfmobile_bench", 1)
            put("run_id", runId)
            put("model", model)
            put("delegate", delegate)
            put("threads", threads)
            put("runs", runs)
            put("warmup", warmup)
            put("runtime", "LiteRT ${BuildConfig.LITERT_VERSION} Interpreter (Android)")
            put("device", JSONObject().apply {
                put("manufacturer", Build.MANUFACTURER)
                put("model", Build.MODEL)
                put("sdk", Build.VERSION.SDK_INT)
                put("abi", Build.SUPPORTED_ABIS.firstOrNull() ?: "")
                put("soc", if (Build.VERSION.SDK_INT >= 31) Build.SOC_MODEL else Build.HARDWARE)
            })
        }

    private fun runBenchmark(
        model: String, threads: Int, runs: Int, warmup: Int, delegate: String, runId: String,
    ): JSONObject {
        val out = base(model, threads, runs, warmup, delegate, runId)
        fun fail(msg: String) = out.apply { put("status", "error"); put("error", msg) }
        if (delegate !in DELEGATES) return fail("unknown delegate $delegate")
        if (threads < 1 || runs < 1 || warmup < 0) return fail("threads/runs must be >= 1, warmup >= 0")
        val file = File(model)
        if (!file.isFile) return fail("model file not found: $model")
        var interpreter: Interpreter? = null
        var gpu: Delegate? = null
        var nnapi: NnApiDelegate? = null
        try {
            val buffer = RandomAccessFile(file, "r").use { raf ->
                raf.channel.map(FileChannel.MapMode.READ_ONLY, 0, raf.length())
            }
            val t0 = SystemClock.elapsedRealtimeNanos()
            val options = Interpreter.Options().setNumThreads(threads)
            when (delegate) {
                "CPU" -> options.setUseXNNPACK(false)
                "XNNPACK" -> options.setUseXNNPACK(true)
                "GPU" -> { val g = GpuDelegate(); gpu = g; options.addDelegate(g) }
                "NNAPI" -> { val n = NnApiDelegate(); nnapi = n; options.addDelegate(n) }
            }
            val interp = Interpreter(buffer, options)
            interpreter = interp
            interp.allocateTensors()
            val initMs = (SystemClock.elapsedRealtimeNanos() - t0) / 1e6
            // Random inputs (latency does not depend on values), one direct buffer per input.
            val rnd = Random(0)
            val inputs = Array(interp.inputTensorCount) { i ->
                val t = interp.getInputTensor(i)
                ByteBuffer.allocateDirect(t.numBytes()).order(ByteOrder.nativeOrder()).apply {
                    val bytes = ByteArray(t.numBytes()).also { rnd.nextBytes(it) }
                    put(bytes); rewind()
                }
            }
            val outputs = HashMap<Int, Any>()
            for (i in 0 until interp.outputTensorCount) {
                val t = interp.getOutputTensor(i)
                outputs[i] = ByteBuffer.allocateDirect(t.numBytes()).order(ByteOrder.nativeOrder())
            }
            fun timed(n: Int): JSONArray {
                val arr = JSONArray()
                repeat(n) {
                    inputs.forEach { it.rewind() }
                    outputs.values.forEach { (it as ByteBuffer).rewind() }
                    val s = SystemClock.elapsedRealtimeNanos()
                    interp.runForMultipleInputsOutputs(inputs, outputs)
                    arr.put((SystemClock.elapsedRealtimeNanos() - s) / 1e6)
                }
                return arr
            }
            val warm = timed(warmup)
            val times = timed(runs)
            out.put("status", "ok")
            out.put("init_ms", initMs)
            out.put("warmup_ms", warm)
            out.put("times_ms", times)
        } catch (e: Throwable) {   // bad model, delegate unavailable, OOM: report, never crash silently
            fail("${e.javaClass.simpleName}: ${e.message ?: ""}".replace('\n', ' ').take(300))
        } finally {
            interpreter?.close()
            (gpu as? AutoCloseable)?.close()
            nnapi?.close()
        }
        return out
    }

    private fun report(result: JSONObject, runId: String) {
        val dir = File(getExternalFilesDir(null), "results").apply { mkdirs() }
        val file = File(dir, "$runId.json")
        result.put("result_file", file.absolutePath)
        // Write-then-rename so the host never pulls a half-written file.
        val tmp = File(dir, "$runId.json.tmp")
        tmp.writeText(result.toString())
        tmp.renameTo(file)
        var line = result.toString()
        if (line.length > MAX_LOG_JSON) {
            val short = JSONObject(result.toString()).apply { remove("times_ms"); remove("warmup_ms") }
            line = short.toString()
        }
        Log.i(TAG, line)
    }
}
