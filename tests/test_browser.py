"""The webcam page in a real browser: Debian's chromium driven by selenium, its fake camera fed from the shared clip.

Chromium reads the clip as a .y4m file (written here from the mp4 with OpenCV), so the page's getUserMedia gets the
clip's frames, streams them over the WebSocket to a real server on 127.0.0.1, and draws what comes back. Screenshots
go to FER_SCREENSHOTS (default: the test's tmp folder) so a person can look at them.
"""

import base64
import os
import shutil
import time
from pathlib import Path

import cv2
import pytest

pytest.importorskip("fastapi", reason="needs the [serve] extra")
webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium ([dev] extra)")

from fer.serve.server import BackgroundServer  # noqa: E402

CHROMIUM = os.environ.get("FER_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("FER_CHROMEDRIVER", "/usr/bin/chromedriver")
# The flags this machine's headless Chromium needs: no sandbox as root, no GPU, and no background networking (the
# network is closed; without these Chromium keeps trying Google's hosts). The fake-media flags replace the camera
# and its permission prompt.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                  "--window-size=1280,1000")
FRAMES = 120  # 4 s of the clip; Chromium loops it


def write_y4m(video: Path, out: Path, frames: int) -> Path:
    """The first `frames` frames of a video as an uncompressed YUV4MPEG2 (4:2:0) file, Chromium's fake-camera format."""
    capture = cv2.VideoCapture(str(video))
    fps = capture.get(cv2.CAP_PROP_FPS) or 30.0
    with open(out, "wb") as f:
        for index in range(frames):
            ok, frame = capture.read()
            assert ok, f"{video} ended after {index} frames"
            height, width = frame.shape[:2]
            if index == 0:
                f.write(f"YUV4MPEG2 W{width} H{height} F{round(fps * 1000)}:1000 Ip A1:1 C420jpeg\n".encode())
            f.write(b"FRAME\n" + cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420).tobytes())  # (H * 3/2, W) planes
    capture.release()
    return out


@pytest.fixture(scope="module")
def chromium_paths():
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not shutil.which(path)]
    if missing:
        message = f"{', '.join(missing)} not found: apt-get install chromium chromium-driver (.ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI installs them: a missing browser there is a broken setup, not a skip
        pytest.skip(message)
    return CHROMIUM, CHROMEDRIVER


@pytest.fixture(scope="module")
def server(engine):
    with BackgroundServer(engine) as running:
        yield running


@pytest.fixture(scope="module")
def browser(chromium_paths, shared, tmp_path_factory):
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    folder = tmp_path_factory.mktemp("chromium")
    camera = write_y4m(shared / "media" / "short_hamilton_clip.mp4", folder / "clip.y4m", FRAMES)
    options = Options()
    options.binary_location = chromium_paths[0]
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--use-file-for-fake-video-capture={camera}")
    options.add_argument(f"--user-data-dir={folder / 'profile'}")  # a new, empty profile
    os.environ.setdefault("SE_OFFLINE", "true")  # selenium: never look for a driver or browser online
    driver = webdriver.Chrome(options=options, service=Service(executable_path=chromium_paths[1]))
    driver.set_script_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("FER_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def wait_for(driver, script: str, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.2)
    state = driver.execute_script("return JSON.stringify({fer: window.fer, status: "
                                  "document.getElementById('status').textContent})")
    raise AssertionError(f"{what}: not within {timeout} s; page state {state[:1000]}")


def test_webcam_page_shows_boxes_and_labels_for_the_clip(server, browser, screenshots):
    browser.get(server.url + "/")
    assert browser.title.startswith("fer-toolkit")
    wait_for(browser, "return document.getElementById('model').textContent", 10, "the model name from /v1/models")
    browser.find_element("id", "start").click()
    wait_for(browser, "return document.getElementById('status').textContent === 'connected'", 10, "connected")
    answer = wait_for(browser, "return window.fer.last && window.fer.last.faces.length && window.fer.answers >= 10 "
                               "&& window.fer.last", 20, "10 answers and a face")
    classes = set(answer["faces"][0]["probabilities"])
    assert answer["faces"][0]["label"] in classes and len(answer["faces"][0]["box"]) == 4
    face_list = browser.find_element("id", "faces").text
    assert any(name in face_list for name in classes), face_list
    fps = float(browser.find_element("id", "fps").text.split()[0])
    assert fps > 0, "the frames-per-second readout moves"
    assert not browser.execute_script("return window.fer.errors"), browser.execute_script("return window.fer.errors")
    # the canvas shows the frame with the box: the green of the boxes is on it
    green = browser.execute_script("""
        const c = document.getElementById('view'), d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i+1] > 150 && d[i] < 60 && d[i+2] < 110) n++;
        return n;""")
    assert green > 200, f"only {green} box-green pixels on the canvas"
    path = screenshots / "browser_live.png"
    assert browser.save_screenshot(str(path)) and path.stat().st_size > 10_000
    browser.find_element("id", "stop").click()


def test_dropped_photo_is_annotated(server, browser, shared, screenshots):
    browser.get(server.url + "/")
    data = base64.b64encode((shared / "media" / "two_people.jpg").read_bytes()).decode()
    # a real drop event carrying the file, as a drag from the desktop delivers it
    browser.execute_script("""
        const bytes = Uint8Array.from(atob(arguments[0]), (c) => c.charCodeAt(0));
        const transfer = new DataTransfer();
        transfer.items.add(new File([bytes], 'two_people.jpg', {type: 'image/jpeg'}));
        const drop = document.getElementById('drop');
        for (const type of ['dragenter', 'dragover', 'drop'])
          drop.dispatchEvent(new DragEvent(type, {dataTransfer: transfer, bubbles: true, cancelable: true}));""", data)
    answer = wait_for(browser, "return window.fer.photo", 20, "the photo's answer")
    assert len(answer["faces"]) == 2, answer
    assert not browser.execute_script("return document.getElementById('photo').hidden")
    text = browser.find_element("id", "photo-faces").text
    assert text.count("Face ") == 2 and answer["faces"][0]["label"] in text, text
    assert "2 face(s)" in browser.find_element("id", "drop").text
    browser.execute_script("document.getElementById('photo').scrollIntoView()")
    path = screenshots / "browser_photo.png"
    assert browser.save_screenshot(str(path)) and path.stat().st_size > 10_000
    # and the file picker path, with a photo without a face
    browser.find_element("id", "file").send_keys(str(shared / "media" / "coffee_noface.png"))
    wait_for(browser, "return window.fer.photo && window.fer.photo.faces.length === 0", 20, "the no-face answer")
    assert "no face" in browser.find_element("id", "photo-faces").text


def test_page_fits_a_phone(server, browser, screenshots):
    browser.set_window_size(390, 844)  # a phone's CSS viewport
    try:
        browser.get(server.url + "/")
        wait_for(browser, "return document.getElementById('model').textContent", 10, "the page")
        overflow = browser.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"the page is {overflow} px wider than a phone's screen"
        path = screenshots / "browser_phone.png"
        assert browser.save_screenshot(str(path))
    finally:
        browser.set_window_size(1280, 1000)


def test_page_with_a_token(engine, browser):
    token = "browser-token-0123456789"
    with BackgroundServer(engine, token=token) as server:
        browser.get(server.url + "/")
        assert "missing or wrong token" in browser.find_element("tag name", "body").text
        browser.get(server.url + f"/?token={token}")
        wait_for(browser, "return document.getElementById('model').textContent", 10, "the model name with the token")
        browser.find_element("id", "start").click()
        wait_for(browser, "return window.fer.last && window.fer.last.faces.length", 20, "a face over the WebSocket")
        browser.find_element("id", "stop").click()
